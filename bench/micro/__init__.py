"""Microbenchmarks of one operation each: choices measured but not adopted (run them in a
scratch venv that has the candidate library; see each module) and the gateway's send path
(``gateway_send``, this venv)."""
