"""Conversations: ids, membership rules, group send requests and receipts (pure: no I/O).

The store (``delivery.store.conversations``) carries these decisions out in SQL; the rules are
documented in docs/routing.md ("Conversations") and the frames in docs/protocol.md.
"""
