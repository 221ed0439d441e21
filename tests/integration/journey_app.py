"""A small FastAPI shop for journey tests: POST /login → token, GET /items (bearer) → ids,
GET /items/{id} (bearer), and a cookie cart (POST /cart sets it, GET /cart reads it).

`SEEN` records what the app saw so tests can check the journey really ran in order with the
fed users, the extracted tokens and ids, and each user's own cookie. `JourneyServer` serves it
with uvicorn on a free loopback port in a background thread.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from typing import Any

import uvicorn
from fastapi import FastAPI, Header, HTTPException, Request, Response

APP = FastAPI()
USERS = {f"user{i}": f"pw{i}" for i in range(1, 41)}
ITEMS = [101, 202, 303]
TOKENS: dict[str, str] = {}
SEEN: dict[str, Any] = {}


def reset() -> None:
    """Forget what the app saw."""
    SEEN.clear()
    SEEN.update(logins=[], reads=[], bad_auth=0, cart_ok=0, cart_bad=0, lists=0)


reset()


def _user(authorization: str | None) -> str:
    token = (authorization or "").removeprefix("Bearer ")
    user = TOKENS.get(token)
    if user is None:
        SEEN["bad_auth"] += 1
        raise HTTPException(401, "no valid token")
    return user


@APP.post("/login")
async def login(request: Request) -> dict[str, Any]:
    body = await request.json()
    user = body.get("username")
    if USERS.get(user) != body.get("password"):
        raise HTTPException(401, "bad credentials")
    token = secrets.token_hex(8)
    TOKENS[token] = user
    SEEN["logins"].append(user)
    return {"data": {"token": token}}


@APP.get("/slow")
async def slow() -> dict[str, bool]:
    """50 ms per answer: a journey user can take at most 20 arrivals a second."""
    await asyncio.sleep(0.05)
    return {"ok": True}


@APP.get("/items")
async def items(authorization: str | None = Header(None)) -> dict[str, Any]:
    _user(authorization)
    SEEN["lists"] += 1
    return {"items": [{"id": i} for i in ITEMS]}


@APP.get("/items/{item_id}")
async def item(item_id: int, authorization: str | None = Header(None)) -> dict[str, Any]:
    user = _user(authorization)
    if item_id not in ITEMS:
        raise HTTPException(404, "no such item")
    SEEN["reads"].append((user, item_id))
    return {"id": item_id, "name": f"item {item_id}"}


@APP.post("/cart")
async def add_to_cart(request: Request, response: Response) -> dict[str, str]:
    owner = request.query_params.get("owner", "")
    response.set_cookie("cart", owner)
    response.headers["X-Cart-Id"] = f"cart-{owner}"
    return {"ok": "yes"}


@APP.get("/cart")
async def cart(request: Request) -> Response:
    owner = request.query_params.get("owner", "")
    if request.cookies.get("cart") == owner:
        SEEN["cart_ok"] += 1
        return Response(f'<input name="csrf" value="tok-{owner}">', media_type="text/html")
    SEEN["cart_bad"] += 1
    return Response("no cart", status_code=409)


class JourneyServer:
    """uvicorn serving `APP` on a free loopback port, in a background thread."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            APP, host="127.0.0.1", port=self.port, log_level="warning", access_log=False,
            lifespan="off",
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> JourneyServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
