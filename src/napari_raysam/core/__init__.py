"""The plugin's logic, free of Qt and napari, in layers that import downwards only.

* bottom layer, the modules directly in ``core``: ``errors``, ``paths`` (the plugin's own
  folders), ``images`` (the one normalisation policy), ``storage`` (a storage URI: folders and
  object stores), ``events`` (a run's progress events in storage), ``job_env`` (attach to Ray
  on the cluster), ``node_cache`` (job inputs copied to a node), ``model_store`` (fine-tuned
  models on this computer; what ``run:NAME`` resolves through). They import nothing above them.
* ``dataset``: the training-set format (export, append, validate, read, upload, shards).
* ``sam``: models and checkpoints, embeddings, prompted and automatic segmentation, prompts,
  losses and evaluation (shared by the docks and the training job). May import ``dataset``.
* ``training`` and ``apply``: the jobs that run on the cluster (fine-tuning with Ray Train;
  batch segmentation with Ray Data). May import ``sam`` and ``dataset``; never the client side
  or each other.
* ``cluster`` and ``runs``: the client side (profiles, the Jobs API, the local head; submit,
  follow, fetch). May import everything above in this list; ``cluster`` only the bottom layer.

``tests/test_import_direction.py`` enforces these rules; the CLI (``napari_raysam.cli``), the
docks (``napari_raysam._qt``) and the entrypoints sit on top and may import any of them.
"""
