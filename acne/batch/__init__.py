"""`python -m acne batch INPUT... --out results.jsonl|results.parquet`: many photos, one row each.

Inputs are photo files, folders (searched recursively for image files; hidden files are skipped) and
lists of paths (`.txt`: one path a line, `#` comments; `.csv`: the `file`, `path` or `image` column,
else the first one). Relative paths in a list are taken from the list's folder. Every photo gives one
row with the contract of `python -m acne analyze --json` (`file`, `ok`, `error` when not ok, ...); a
photo that cannot be analysed gives an error row and never stops the run.

Engines:
- `local` (default): `--workers` photos at a time (default: one per CPU), each model call on one thread,
  as `analyze` runs them, so the rows are the same. `--pool threads` (default): threads in this
  process sharing one copy of the models; one photo's reading, decoding and post-processing overlap
  the others' inference, and no core waits for the other model as in `analyze`. `--pool processes`:
  spawned worker processes, each with its own copy of the models on `--threads` threads; each reads
  the next photo while it analyses the current one, is handed at most two photos at a time (a bounded
  pipeline), and a worker that dies is replaced (its photo is tried once more, then gets an error row).
  Either way the parent writes each row as it arrives and draws the progress bar.
- `ray`: Ray Data over a local instance or a cluster (acne/batch/ray.py).

Output and resume: rows are written as they finish (JSON lines, flushed row by row, so a crash, Ctrl-C
or a killed process loses no finished row). A `.parquet` output, and every Ray run, first collects
rows in `<out>.parts/` (JSON lines or Parquet parts), then consolidates them into `<out>` at the end.
`--resume` skips every photo that already has a row in `<out>` or `<out>.parts/`, whatever engine
wrote it, and consolidates what an interrupted run left.

Modules: command.py (the `batch` sub-command: flags, checks, engine choice, summary), inputs.py (photos
from files, folders and lists), sinks.py (the JSON-lines / Parquet output and --resume), local.py (the
thread and process pools), ray.py (the Ray engine).
"""
