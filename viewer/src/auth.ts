// OpenID Connect login for the viewer: authorization code + PKCE (S256), a public client
// (no secret). The server puts the issuer's public settings in the page
// (<script type="application/json" id="dcm-auth">, see web/viewer_routes.py) when
// [auth] mode = "oidc"; without them this module does nothing.
//
// * Page load without a token: a random verifier and state go to sessionStorage, the
//   browser goes to the issuer's authorization endpoint; it comes back to the viewer's
//   folder ({origin}/viewer/) with ?code&state. The state must match; the code and the
//   verifier are exchanged at the token endpoint; the page's URL is put back as it was.
// * This module awaits all that at the top level, so the modules importing it (dicomweb,
//   main) start only once logged in, on the original URL.
// * The access token lives in memory and sessionStorage (this tab only, gone when it
//   closes), never in localStorage. It goes as "Authorization: Bearer" on requests to the
//   DICOMweb root only: authFetch here, decode workers (posted to each new Worker), and
//   thumbnails (<img src> under the root is fetched with the token into a blob: URL).

const STORE = "dcmstream.auth.token";
const PENDING = "dcmstream.auth.pending";
const AUTH_MESSAGE = "dcmstream-auth";

interface Settings {
  mode: string;
  issuer?: string;
  client_id?: string;
  authorization_endpoint?: string;
  token_endpoint?: string;
  scope?: string;
}

interface Stored {
  token: string;
  expires: number; // ms since the epoch
  refresh?: string;
}

let current: Stored | null = null;
let settings: Settings | null = null;
let root = "";
const workers = new Set<Worker>();

const inWindow = typeof window !== "undefined" && typeof document !== "undefined";

function b64url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function random(n = 32): string {
  return b64url(crypto.getRandomValues(new Uint8Array(n)));
}

async function challengeOf(verifier: string): Promise<string> {
  return b64url(new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier))));
}

function redirectUri(): string {
  return new URL("./", document.baseURI).href; // the viewer's folder: {origin}/viewer/
}

/** Whether a request goes to the DICOMweb root (the only place a token is sent). */
function protectedUrl(url: string): boolean {
  if (!root) return false;
  const base = typeof location !== "undefined" ? location.href : undefined;
  const u = new URL(url, base);
  const r = new URL(root, base);
  return u.origin === r.origin && (u.pathname === r.pathname || u.pathname.startsWith(r.pathname.replace(/\/$/, "") + "/"));
}

function setToken(stored: Stored | null): void {
  current = stored;
  if (inWindow) {
    if (stored) sessionStorage.setItem(STORE, JSON.stringify(stored));
    else sessionStorage.removeItem(STORE);
    for (const w of workers) w.postMessage({ type: AUTH_MESSAGE, token: stored?.token ?? null, root });
    scheduleRefresh();
  }
}

async function tokenRequest(form: Record<string, string>): Promise<Stored> {
  const r = await fetch(settings!.token_endpoint!, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
    body: new URLSearchParams(form).toString(),
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok || typeof data.access_token !== "string") {
    throw new Error(`login failed at the token endpoint: HTTP ${r.status} ${data.error ?? ""}`.trim());
  }
  const seconds = Number(data.expires_in) > 0 ? Number(data.expires_in) : 300;
  return { token: data.access_token, expires: Date.now() + seconds * 1000, refresh: data.refresh_token ?? current?.refresh };
}

let refreshTimer: ReturnType<typeof setTimeout> | undefined;
function scheduleRefresh(): void {
  clearTimeout(refreshTimer);
  if (!current?.refresh) return;
  const wait = Math.max(5_000, current.expires - Date.now() - 60_000);
  refreshTimer = setTimeout(() => {
    tokenRequest({ grant_type: "refresh_token", refresh_token: current!.refresh!, client_id: settings!.client_id! })
      .then(setToken)
      .catch(() => setToken(null)); // the next request logs in again
  }, wait);
}

/** Send the browser to the issuer; resolves never (the page unloads). */
async function redirectToLogin(): Promise<never> {
  const s = settings!;
  const verifier = random(48);
  const state = random(16);
  sessionStorage.setItem(PENDING, JSON.stringify({ state, verifier, returnTo: location.href }));
  const q = new URLSearchParams({
    response_type: "code",
    client_id: s.client_id!,
    redirect_uri: redirectUri(),
    scope: s.scope || "openid",
    state,
    code_challenge: await challengeOf(verifier),
    code_challenge_method: "S256",
  });
  location.assign(`${s.authorization_endpoint}?${q}`);
  return new Promise<never>(() => {});
}

async function finishLogin(params: URLSearchParams): Promise<void> {
  const pending = JSON.parse(sessionStorage.getItem(PENDING) ?? "null") as { state: string; verifier: string; returnTo: string } | null;
  sessionStorage.removeItem(PENDING);
  if (!pending || params.get("state") !== pending.state) throw new Error("login failed: the state does not match this tab's login");
  setToken(await tokenRequest({
    grant_type: "authorization_code",
    code: params.get("code")!,
    redirect_uri: redirectUri(),
    client_id: settings!.client_id!,
    code_verifier: pending.verifier,
  }));
  // Back to the page the user asked for (same origin only), without code and state.
  const back = new URL(pending.returnTo, location.href);
  history.replaceState(null, "", back.origin === location.origin ? back.href : redirectUri());
}

async function start(): Promise<void> {
  if (!inWindow) {
    // A decode worker: the page posts the token (and again after each refresh).
    self.addEventListener("message", (event: MessageEvent) => {
      if (event.data?.type !== AUTH_MESSAGE) return;
      event.stopImmediatePropagation(); // not a task for the worker's own handler
      root = event.data.root ?? root;
      current = event.data.token ? { token: event.data.token, expires: Infinity } : null;
    });
    return;
  }
  const node = document.getElementById("dcm-auth");
  if (!node) return;
  settings = JSON.parse(node.textContent || "{}") as Settings;
  root = document.querySelector<HTMLMetaElement>('meta[name="dicomweb-root"]')?.content ?? "/dicomweb";
  if (settings.mode !== "oidc" || !settings.client_id || !settings.authorization_endpoint || !settings.token_endpoint) return;
  installBrowserHooks();
  const params = new URLSearchParams(location.search);
  if (params.get("error") && params.get("state")) {
    sessionStorage.removeItem(PENDING);
    throw new Error(`login refused by the identity provider: ${params.get("error")}`);
  }
  if (params.get("code") && params.get("state")) {
    await finishLogin(params);
    return;
  }
  const saved = JSON.parse(sessionStorage.getItem(STORE) ?? "null") as Stored | null;
  if (saved && saved.expires > Date.now() + 10_000) {
    setToken(saved);
    return;
  }
  await redirectToLogin();
}

/** fetch() with the bearer token on requests to the DICOMweb root. */
export async function authFetch(input: string, init: RequestInit = {}): Promise<Response> {
  if (!current || !protectedUrl(input)) return fetch(input, init);
  if (inWindow && current.expires < Date.now() + 5_000) await redirectToLogin();
  const headers = new Headers(init.headers);
  headers.set("Authorization", `Bearer ${current.token}`);
  return fetch(input, { ...init, headers });
}

function installBrowserHooks(): void {
  // Decode workers fetch frames themselves: each new worker gets the token.
  const Native = window.Worker;
  class AuthWorker extends Native {
    constructor(url: string | URL, options?: WorkerOptions) {
      super(url, options);
      workers.add(this);
      if (current) this.postMessage({ type: AUTH_MESSAGE, token: current.token, root });
    }
  }
  window.Worker = AuthWorker;
  // <img src> cannot send a header: thumbnails under the root are fetched with the token.
  const descriptor = Object.getOwnPropertyDescriptor(HTMLImageElement.prototype, "src")!;
  Object.defineProperty(HTMLImageElement.prototype, "src", {
    configurable: true,
    enumerable: descriptor.enumerable,
    get(this: HTMLImageElement) {
      return descriptor.get!.call(this);
    },
    set(this: HTMLImageElement, value: string) {
      if (!current || !protectedUrl(value)) {
        descriptor.set!.call(this, value);
        return;
      }
      authFetch(value)
        .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(`HTTP ${r.status}`))))
        .then((blob) => {
          const url = URL.createObjectURL(blob);
          this.addEventListener("load", () => URL.revokeObjectURL(url), { once: true });
          descriptor.set!.call(this, url);
        })
        .catch(() => this.dispatchEvent(new Event("error")));
    },
  });
}

/** Settled once the page is logged in (or needs no login); rejected when login failed. */
export const ready: Promise<void> = start().catch((e: Error) => {
  if (inWindow) {
    const el = document.getElementById("error");
    if (el) {
      el.textContent = e.message;
      el.hidden = false;
    }
  }
  throw e;
});
// Everything that imports this module (dicomweb, main) starts logged in.
await ready.catch(() => undefined);
