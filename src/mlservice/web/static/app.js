// mlservice web UI: small helpers the pages share. No framework, no network beyond this server.
"use strict";
window.mlservice = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

  // Calls the JSON API with the session cookie; unsafe methods carry the CSRF token.
  async function api(path, options = {}) {
    const init = { credentials: "same-origin", ...options, headers: { Accept: "application/json", ...(options.headers || {}) } };
    if (init.method && !["GET", "HEAD"].includes(init.method.toUpperCase())) init.headers["X-CSRF-Token"] = csrf();
    const response = await fetch(path, init);
    const body = response.headers.get("content-type")?.includes("application/json") ? await response.json() : null;
    if (!response.ok) {
      const error = new Error(body?.error?.message || `Request failed (${response.status})`);
      error.status = response.status;
      error.code = body?.error?.code;
      throw error;
    }
    return body;
  }

  return { api, csrf };
})();
