"""``make bench``: callrec against the limit (nginx) and the usual choice (Starlette), on
this machine, as ratios in one run. See bench/run.py for the scenarios."""
