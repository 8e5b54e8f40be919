"""Exit codes of `prunestudio` (README, "What happens when…").

0 every candidate done (or the study cancelled on request); 1 the study failed, or export
--verify found a mismatch; 2 bad input, nothing run; 3 the study finished but some candidates
failed (see `prunestudio show`); 130 / 143 interrupted by SIGINT / SIGTERM (resumable with
`prunestudio run --resume`).
"""

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANDIDATES_FAILED = 0, 1, 2, 3
