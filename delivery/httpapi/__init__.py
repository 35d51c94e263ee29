"""``delivery api``: ``POST /v1/messages`` for producers in any language (docs/operations.md).

``auth.py``, ``admission.py`` and ``request.py`` are pure decisions; ``app.py`` is the Starlette
shell that feeds them and calls :func:`delivery.api.send_message`; ``cli.py`` runs it under
uvicorn. The OpenAPI document is ``openapi.yaml`` beside them, served at ``/openapi.json``.
"""
