"""The two case studies of section 4, each an ``env`` option with its own loop (its program).

* ``memorization`` (section 4.1, figure 1): an MLP memorises random labels of a fixed image set; the
  labels are re-drawn after every iteration. ``memorization.run_memorization``.
* ``brownian`` (section 4.2, figure 2): gradient descent on the Q-learning loss of the classification
  MDP against a random walk with the same step norms. ``brownian.run_brownian``.

Both write the same files as the trainer (``run.json``, parquet metric shards, npz arrays; see
``metrics.py``), so ``load_sweep`` and the report read them. They keep no checkpoint: a restart in
an unfinished run directory starts over (``common.begin_run``). ``docs/case-studies.md`` lists
every metric.

Each is registered as an env part with ``program=<function>`` (``envs/memorization.py``,
``envs/brownian.py``); ``trainer.train`` picks it by the env and runs it inside the run lifecycle
(``lifecycle.opened``), as it runs the DQN loop for every other env.
"""
