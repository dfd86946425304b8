"""Operator tools: the commands that look after a deployment rather than use it.

The use cases (agents, routing, security, audit, simulate) live in ``services/``; the tools here
check, serve, load and measure it:

- ``health`` (the evaluation; its rules are in ``domain/health.py``) and ``health_checks``
  (the checks that touch engines and files);
- ``serve``: the HTTP server of health endpoints and fleet metrics;
- ``soak/``: the long-running workload with its sampler, verdict and artifacts;
- ``bench``: the benchmarks of ``arbiter bench``;
- ``mutate``: the mutation score of ``arbiter mutate``;
- ``setup`` (``init``) and ``demo``: first-run set-up and the demonstration fleet.

Tools may use the services, resilience and adapters; bootstrap hands them what they need, and
nothing here imports bootstrap or the CLI.
"""
