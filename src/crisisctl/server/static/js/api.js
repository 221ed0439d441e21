/**
 * api.js — the console's calls to the JSON API: reads, and changes that carry the CSRF token.
 *
 * Every change (POST/PUT/PATCH/DELETE) sends `X-CSRF-Token` with the value of the
 * `crisisctl_csrf` cookie (double-submit; the session cookie itself is HttpOnly). A 401 sends
 * the person to the sign-in page and back; any other failure raises an `ApiError` carrying
 * the server's one-sentence reason, which the pages show as is.
 */

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === "crisisctl_csrf") return decodeURIComponent(rest.join("="));
  }
  return "";
}

export function toLogin() {
  const next = window.location.pathname + window.location.search;
  window.location.assign(`/login?next=${encodeURIComponent(next)}`);
}

async function reason(response) {
  try {
    const body = await response.json();
    const detail = body.detail ?? body.error ?? body.message;
    if (typeof detail === "string") return detail;
    if (detail) return JSON.stringify(detail);
  } catch {
    // not JSON
  }
  return `the server answered ${response.status} ${response.statusText}`.trim();
}

async function call(method, url, body) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin" };
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrfToken();
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch {
    throw new ApiError(0, "the console server cannot be reached: check that crisisctl serve runs.");
  }
  if (response.status === 401 && !url.startsWith("/api/session")) {
    toLogin();
    throw new ApiError(401, "your session has ended: sign in again.");
  }
  if (!response.ok) throw new ApiError(response.status, await reason(response));
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

export const getJSON = (url) => call("GET", url);
export const post = (url, body = {}) => call("POST", url, body);
export const del = (url) => call("DELETE", url);
