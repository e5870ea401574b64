"""Taking one of vLLM's routes out of its app, so lcrag's router can serve that path instead."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute


def drop_vllm_route(app: FastAPI, path: str, method: str) -> None:
    app.router.routes[:] = [
        route
        for route in app.router.routes
        if not (isinstance(route, APIRoute) and route.path == path and method in route.methods)
    ]
