"""``delivery demo``: the whole pipeline with simulated clients, the seed's race forced on
purpose, a live progress line and a final report. Exit status 0 only when nothing was lost.

The phases, one function each (``phases.py``): start the stack (``cli.py``: the embedded one,
or the process cluster of ``stack.py``), connect the clients, traffic with forced races, group
conversations (``groups.py``: per-recipient outcomes, seq order, the senders' receipts), drain
(settle, then every user reconnects and receives what it has not acked), collect the result;
``population.py`` holds the plan, the simulated users and what they record; ``report.py``
renders the result, one section a function.
"""
