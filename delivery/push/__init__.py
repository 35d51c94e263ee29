"""Push notifications through Firebase Cloud Messaging (firebase-admin).

Modules (import the one you need; this package imports nothing heavy on its own):

- ``delivery.push.service``: ``push_message(message_id, attempt)``, the push step without Celery;
- ``delivery.push.tasks``: the Celery tasks ``delivery.push`` and ``delivery.register_device``;
- ``delivery.push.fcm``: the firebase-admin sender and the classification of FCM errors;
- ``delivery.push.devices``: device registration with validation;
- ``delivery.push.stub``: an FCM-compatible local HTTP server (``delivery fcm-stub``);
- ``delivery.push.cli``: ``delivery device add|list|remove``.

See ``docs/push.md``.
"""
