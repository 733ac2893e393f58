// Element Web's first steps against Bastion, through matrix-js-sdk (which Element is built on).
// Driven by tests/acceptance/test_element_js.py.
//
//   node element.mjs startup <baseUrl>
//       the homeserver check Element makes before anything else (AutoDiscovery: "Your Element
//       is misconfigured … homeserver is too old" when it fails), the version switches the SDK
//       reads at start-up, the registration flows from registerRequest({}), and the calls
//       Element makes once logged in (media config, third-party protocols, TURN server).
//   node element.mjs invite <baseUrl>
//       alice (display name "Alice Liddell") opens a direct chat with bob; bob's client,
//       syncing, names the invite from its invite_state: "Alice Liddell", not "Empty room".
//   node element.mjs directory <baseUrl>
//       Element's "Start chat" dialog: bob finds alice (display name "Alice Liddell", in a public
//       room) through the user directory (searchUserDirectory), opens a direct chat with her,
//       and she joins it; dave, only in a private room, is not found.
//
// Progress lines go to stdout as JSON objects; the last line is {"result": ...}.

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

const sdk = await import("matrix-js-sdk");
const { logger } = await import("matrix-js-sdk/lib/logger.js");
const { SUPPORTED_MATRIX_VERSIONS } = await import("matrix-js-sdk/lib/version-support.js");
logger.setLevel(process.env.BASTION_JS_LOG || "warn");

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const PASSWORD = "correct horse battery staple";

async function until(what, fn, timeoutMs = 30000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const v = await fn();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await sleep(100);
    }
}

// Element's registration: an empty request for the flows, then the dummy stage in that session.
async function register(baseUrl, username) {
    const c = sdk.createClient({ baseUrl });
    let flows;
    try {
        await c.registerRequest({});
        throw new Error("an empty registration request succeeded");
    } catch (e) {
        if (e.httpStatus !== 401) throw e;
        flows = e.data;
    }
    const creds = await c.registerRequest({
        username,
        password: PASSWORD,
        auth: { type: "m.login.dummy", session: flows.session },
    });
    return { flows, creds };
}

function client(baseUrl, creds) {
    return sdk.createClient({
        baseUrl,
        userId: creds.user_id,
        accessToken: creds.access_token,
        deviceId: creds.device_id,
    });
}

async function startup(baseUrl) {
    // 1. Element's homeserver check (AutoDiscovery step 3.1: one of the SDK's known versions).
    const discovery = await sdk.AutoDiscovery.fromDiscoveryConfig({
        "m.homeserver": { base_url: baseUrl },
    });
    const hs = discovery["m.homeserver"];
    // 2. The version switches the SDK reads at start-up.
    const anon = sdk.createClient({ baseUrl });
    const versions = (await anon.getVersions()).versions;
    const switches = {};
    for (const v of ["v1.1", "v1.4", "v1.11", "v1.13"]) switches[v] = await anon.isVersionSupported(v);
    const threads = await anon.doesServerSupportThread();
    // 3. The registration flows, then an account in that session.
    const { flows, creds } = await register(baseUrl, `elt${Date.now().toString(36)}`);
    // 4. What Element asks once logged in.
    const c = client(baseUrl, creds);
    const mediaConfig = await c.getMediaConfig(true);
    const legacyMediaConfig = await c.getMediaConfig(false);
    const protocols = await c.getThirdpartyProtocols();
    const turn = await c.turnServer();
    return {
        ok: true,
        discovery_state: hs.state,
        discovery_error: hs.error,
        sdk_supported_versions: SUPPORTED_MATRIX_VERSIONS,
        versions,
        switches,
        threads,
        flows,
        user_id: creds.user_id,
        media_config: mediaConfig,
        legacy_media_config: legacyMediaConfig,
        protocols,
        turn,
    };
}

async function invite(baseUrl) {
    const tag = Date.now().toString(36);
    const alice = client(baseUrl, (await register(baseUrl, `alice${tag}`)).creds);
    const bob = client(baseUrl, (await register(baseUrl, `bob${tag}`)).creds);
    await alice.setDisplayName("Alice Liddell");
    const prepared = new Promise((resolve, reject) => {
        bob.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
            if (state === "PREPARED" || state === "SYNCING") resolve();
            if (state === "ERROR") reject(new Error(`sync error: ${data?.error}`));
        });
    });
    await bob.startClient({ initialSyncLimit: 10, lazyLoadMembers: true });
    await prepared;
    try {
        const { room_id: roomId } = await alice.createRoom({
            preset: "trusted_private_chat",
            is_direct: true,
            invite: [bob.getUserId()],
        });
        const room = await until("the invite", () => {
            const r = bob.getRoom(roomId);
            return r && r.getMyMembership() === "invite" ? r : null;
        });
        return {
            ok: true,
            room_id: roomId,
            alice: alice.getUserId(),
            name: room.name,
            dm_inviter: room.getDMInviter() ?? null,
            inviter_name: room.getMember(alice.getUserId())?.name ?? null,
        };
    } finally {
        bob.stopClient();
    }
}

async function directory(baseUrl) {
    const tag = Date.now().toString(36);
    const alice = client(baseUrl, (await register(baseUrl, `alice${tag}`)).creds);
    const bob = client(baseUrl, (await register(baseUrl, `bob${tag}`)).creds);
    const dave = client(baseUrl, (await register(baseUrl, `dave${tag}`)).creds);
    await alice.setDisplayName("Alice Liddell");
    await dave.setDisplayName("Dave Hidden");
    await alice.createRoom({ preset: "public_chat", name: "Lobby" });
    await dave.createRoom({ preset: "private_chat", name: "Dave's" });
    // What Element's invite dialog sends as the user types.
    const search = await bob.searchUserDirectory({ term: "alice lid", limit: 10 });
    const hidden = await bob.searchUserDirectory({ term: "dave" });
    const found = search.results.find((r) => r.display_name === "Alice Liddell");
    if (!found) throw new Error(`alice not found: ${JSON.stringify(search)}`);
    const prepared = new Promise((resolve, reject) => {
        alice.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
            if (state === "PREPARED" || state === "SYNCING") resolve();
            if (state === "ERROR") reject(new Error(`sync error: ${data?.error}`));
        });
    });
    await alice.startClient({ initialSyncLimit: 10, lazyLoadMembers: true });
    await prepared;
    try {
        const { room_id: roomId } = await bob.createRoom({
            preset: "trusted_private_chat",
            is_direct: true,
            invite: [found.user_id],
        });
        await until("the invite", () => {
            const r = alice.getRoom(roomId);
            return r && r.getMyMembership() === "invite";
        });
        await alice.joinRoom(roomId);
        const members = await bob.getJoinedRoomMembers(roomId);
        return {
            ok: true,
            search,
            hidden,
            alice: alice.getUserId(),
            bob: bob.getUserId(),
            dm_inviter: alice.getRoom(roomId)?.getDMInviter() ?? null,
            joined: Object.keys(members.joined).sort(),
        };
    } finally {
        alice.stopClient();
    }
}

const [mode, baseUrl] = process.argv.slice(2);
let result;
try {
    if (mode === "startup") result = await startup(baseUrl);
    else if (mode === "invite") result = await invite(baseUrl);
    else if (mode === "directory") result = await directory(baseUrl);
    else throw new Error(`unknown mode ${mode}`);
} catch (e) {
    result = { ok: false, error: String(e?.stack || e), data: e?.data ?? null };
}
emit({ result });
process.exit(result.ok ? 0 : 1);
