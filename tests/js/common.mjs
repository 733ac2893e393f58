// What the matrix-js-sdk test scripts share (tags.mjs, upgrade.mjs, spaces.mjs, refresh.mjs,
// unread.mjs, threads.mjs): the SDK loaded quietly (its log on stderr; stdout carries only the
// JSON progress lines), a user registered through the dummy UIA stage, a client started until its
// first sync (with extra startClient options, such as threadSupport), and the runner that calls a
// mode and prints its result as the last line, {"result": ...}.

if (typeof Promise.withResolvers !== "function") {
    Promise.withResolvers = function withResolvers() {
        let resolve;
        let reject;
        const promise = new this((res, rej) => {
            resolve = res;
            reject = rej;
        });
        return { promise, resolve, reject };
    };
}

const toStderr = (...args) => process.stderr.write(args.map(String).join(" ") + "\n");
console.log = console.info = console.debug = console.trace = toStderr;
console.warn = console.error = toStderr;

export const sdk = await import("matrix-js-sdk");
const { logger } = await import("matrix-js-sdk/lib/logger.js");
logger.setLevel(process.env.BASTION_JS_LOG || "warn");

export const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const PASSWORD = "correct horse battery staple";

export async function until(what, fn, timeoutMs = 30000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const v = await fn();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await sleep(100);
    }
}

export async function register(baseUrl, username, extra = {}) {
    const c = sdk.createClient({ baseUrl });
    let session;
    try {
        await c.registerRequest({});
        throw new Error("an empty registration request succeeded");
    } catch (e) {
        if (e.httpStatus !== 401) throw e;
        session = e.data.session;
    }
    return c.registerRequest({
        username,
        password: PASSWORD,
        auth: { type: "m.login.dummy", session },
        ...extra,
    });
}

// A new device of an existing user (password login): credentials for ``client``.
export function login(baseUrl, username) {
    return sdk.createClient({ baseUrl }).loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: username },
        password: PASSWORD,
    });
}

export function client(baseUrl, creds) {
    return sdk.createClient({
        baseUrl,
        userId: creds.user_id,
        accessToken: creds.access_token,
        deviceId: creds.device_id,
    });
}

export async function started(c, opts = {}) {
    const prepared = new Promise((resolve, reject) => {
        c.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
            if (state === "PREPARED" || state === "SYNCING") resolve();
            if (state === "ERROR") reject(new Error(`sync error: ${data?.error}`));
        });
    });
    await c.startClient({ initialSyncLimit: 10, lazyLoadMembers: true, ...opts });
    await prepared;
}

// Runs the mode named by the first argument (with the rest as its arguments), prints its
// result and exits 0 when it says ok.
export async function run(modes) {
    const [mode, ...args] = process.argv.slice(2);
    let result;
    try {
        if (!Object.hasOwn(modes, mode)) throw new Error(`unknown mode ${mode}`);
        result = await modes[mode](...args);
    } catch (e) {
        result = { ok: false, error: String(e?.stack || e), data: e?.data ?? null };
    }
    emit({ result });
    process.exit(result.ok ? 0 : 1);
}
