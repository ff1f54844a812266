"""The API's ASGI middlewares, one small class per module; `entrypoints.api` adds them."""
