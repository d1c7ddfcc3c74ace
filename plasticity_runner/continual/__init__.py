"""Continual supervised protocols of the loss-of-plasticity literature, probed as the RL runs are.

* ``streams.py``: the data streams, one class per protocol (slowly-changing regression, online
  permuted MNIST, shuffled-label sequences, warm-start). A stream is a pure function of the step:
  the minibatch of optimizer step ``t`` and the task it belongs to depend on the run seed and ``t``
  alone, so a resumed run draws exactly what an uninterrupted one does, with nothing to checkpoint.
* ``learner.py``: the supervised learner: the network, the optimizer, the interventions (every hook,
  the target-update hooks at each task switch) and the loss the diagnostics differentiate.
* ``loop.py``: the program every protocol runs (``env=<protocol>`` registers it in ``envs/``):
  train, log, pause for the plasticity probe and the diagnostics on ``probe.every_steps``, record
  each task's own measure, checkpoint at every pause and resume from the newest.
"""
