"""Studies: one loop, and the seams it drives (docs/loop.md).

- `loop`: `run_study(store, study_id, proposer, executor)` — resume, cancel, status, events,
  failures and OOM for every study kind;
- `proposers/`: what to evaluate next (grid, gp, random; finalists as a second pass);
- `executor`: a JSON job out, a JSON result back (`InProcessExecutor` holds the model);
- `measurements/`: perplexity, tasks, efficiency, fitness, sparsity, ... by name;
- `equivalence`: mask-equivalence hooks; `context`: what a worker loads once per study.
"""
