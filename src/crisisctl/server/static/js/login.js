/**
 * login.js — the sign-in page: a token, or a user name and password, posted to /api/session;
 * on success the server sets the session cookies and the page goes where the person was going.
 */

import { post } from "./api.js";
import { say } from "./format.js";

/** Only a path on this site: never another origin ("//host", "https://…", "/\\host"). */
export function safeNext(value) {
  if (typeof value !== "string" || !value.startsWith("/") || value.startsWith("//") || value.startsWith("/\\")) return "/";
  return value;
}

const form = document.getElementById("login-form");
const message = document.getElementById("login-message");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(form);
  const token = String(data.get("token") || "").trim();
  const user = String(data.get("user") || "").trim();
  const password = String(data.get("password") || "");
  if (!token && !(user && password)) {
    say(message, "Give a token, or a user name and its password.", "error");
    return;
  }
  const body = token ? { token } : { user, password };
  const button = form.querySelector("button");
  button.disabled = true;
  try {
    await post("/api/session", body);
    window.location.assign(safeNext(new URLSearchParams(window.location.search).get("next")));
  } catch (error) {
    say(message, error.status === 401 || error.status === 403 ? "Those credentials were not accepted: check them and try again." : error.message, "error");
    button.disabled = false;
  }
});
form.querySelector("button").disabled = false; // enabled once the handler above exists
