"""Fine-tuning SAM on a Ray cluster (runs on the cluster; no Qt, no napari).

- :mod:`.config`: :class:`TrainConfig`, the one description of a run;
- :mod:`.prompts`: prompt sampling shared by training and evaluation;
- :mod:`.losses`: Dice + IoU-regression loss, measured IoU;
- :mod:`.engine`: batched prompt encoder + mask decoder rounds (training step, validation);
- :mod:`.data`: tiles, augmentation, sharding, embedding cache;
- :mod:`.loop`: ``train_loop_per_worker``; :mod:`.runner`: checks + the TorchTrainer;
- :mod:`.report`: report.json and curves.png.

Heavy imports (torch, ray) live inside functions of these modules or in modules the CLI parser
does not import.
"""
