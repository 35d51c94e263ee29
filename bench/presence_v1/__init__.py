"""The presence state and wire format as they were before the per-node cost cuts.

Kept only as a reference: ``bench/presence.py --compare`` measures it in the same run
as today's code (the machine is too noisy to compare runs), and the property tests
check that today's :class:`presence.state.State` behaves exactly like this one.
Runtime code never imports it.
"""
