"""The fine-tuning job that runs on the cluster (Ray Train; no Qt, no napari).

- :mod:`.config`: :class:`TrainConfig`, the one option schema (CLI, Train dock, job argv);
- :mod:`.data`: each epoch's tiles, steps per epoch, the embedding cache of decoder mode;
- :mod:`.step`: one training step as an ``nn.Module`` for DDP;
- :mod:`.trainable`: which parameters train in each mode;
- :mod:`.loop`: ``train_loop_per_worker``; :mod:`.runner`: checks + the TorchTrainer;
- :mod:`.events`: progress events in storage; :mod:`.report`: report.json and curves.png.

May import: the bottom layer (``core.*`` modules), ``core.sam`` and ``core.dataset``. Never the
client side (``core.runs``, ``core.cluster``). Heavy imports (torch, ray) live inside functions
or in modules the CLI parser does not import.
"""
