"""The parts of ``arbiter soak`` (SPEC §11); the sequence lives in ``runner``.

- ``runner``: the run itself (start, sample, stop, verdict, summary); ``state``: its live state file;
- ``options``: parsing of sizes, slopes, mixes and the warm-up (pure);
- ``verdict``: the least-squares fit of RSS and the pass/leak/aborted decision (pure);
- ``latency``: a bounded log-bucket histogram for latency percentiles (pure);
- ``workload``: the operation mix, driven through the real services;
- ``sampler``: the thread that samples RSS, fds, connections, ops and errors every interval;
- ``profiling``: memray's Tracker, FileReader and the offline flame graph;
- ``artifacts``: summary.json, samples.csv and rss.png;
- ``display``: the rich live view on a TTY, one JSON log line per interval otherwise.
"""
