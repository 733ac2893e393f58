// An encrypted conversation through Bastion with matrix-js-sdk and its Rust crypto
// (@matrix-org/matrix-sdk-crypto-wasm, the stack Element Web uses). Driven by
// tests/acceptance/test_e2ee_js.py.
//
//   node e2ee.mjs pair <baseUrl> <roomVersion|default> <helloBody> <replyBody>
//       registers two users, each with a js-sdk client; the first creates an encrypted room
//       (m.room.encryption in initial_state; the server's default room version for "default")
//       and invites the second, who joins; each sends an encrypted message and each must
//       decrypt the other's.
//   node e2ee.mjs join <baseUrl> <userId> <password> <roomId> <sendBody> <expectBody>
//       logs in as an existing user, joins the room it was invited to, sends <sendBody>
//       encrypted, and waits for <expectBody> from another member (e.g. a matrix-nio client)
//       to arrive and decrypt.
//
// Progress lines go to stdout as JSON objects ({"event": ...}); the last line is
// {"result": ...}. The SDK's own logging goes to stderr.

// matrix-js-sdk declares Node >= 22 for Promise.withResolvers; this is all it needs on Node 20.
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

// Keep stdout for the JSON protocol lines.
const toStderr = (...args) => process.stderr.write(args.map(String).join(" ") + "\n");
console.log = console.info = console.debug = console.trace = toStderr;
console.warn = console.error = toStderr;

const sdk = await import("matrix-js-sdk");
const { logger } = await import("matrix-js-sdk/lib/logger.js");
logger.setLevel(process.env.BASTION_JS_LOG || "warn");

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const T0 = Date.now();

async function until(what, fn, timeoutMs = 30000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const v = await fn();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await sleep(100);
    }
}

// Every HTTP request the SDK makes, as [method, path, status, fallback key uploaded?].
const requests = [];
async function recordingFetch(input, init = {}) {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const method = (init.method || "GET").toUpperCase();
    let fallback = null;
    if (url.pathname.endsWith("/keys/upload") && typeof init.body === "string") {
        fallback = Object.keys(JSON.parse(init.body).fallback_keys || {}).length;
    }
    const res = await fetch(input, init);
    requests.push([method, url.pathname, res.status, fallback]);
    return res;
}

async function register(baseUrl, username, password) {
    const c = sdk.createClient({ baseUrl, fetchFn: recordingFetch });
    let session;
    try {
        await c.registerRequest({ username, password });
        throw new Error("registration without auth succeeded");
    } catch (e) {
        if (e.httpStatus !== 401) throw e;
        session = e.data.session;
    }
    return await c.registerRequest({
        username,
        password,
        auth: { type: "m.login.dummy", session },
        initial_device_display_name: "js-sdk",
    });
}

async function login(baseUrl, user, password) {
    const c = sdk.createClient({ baseUrl, fetchFn: recordingFetch });
    return await c.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user },
        password,
        initial_device_display_name: "js-sdk",
    });
}

async function start(baseUrl, creds) {
    const client = sdk.createClient({
        baseUrl,
        userId: creds.user_id,
        accessToken: creds.access_token,
        deviceId: creds.device_id,
        fetchFn: recordingFetch,
    });
    await client.initRustCrypto({ useIndexedDB: false });
    const prepared = new Promise((resolve, reject) => {
        client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
            if (state === "PREPARED" || state === "SYNCING") resolve();
            if (state === "ERROR") reject(new Error(`sync error: ${data?.error}`));
        });
    });
    await client.startClient({ initialSyncLimit: 20, lazyLoadMembers: true });
    await prepared;
    return client;
}

// The decrypted m.room.message events of a room, as the client sees them.
function messages(client, roomId) {
    const room = client.getRoom(roomId);
    if (!room) return [];
    return room
        .getLiveTimeline()
        .getEvents()
        .filter((ev) => ev.getWireType() === "m.room.encrypted" || ev.getType() === "m.room.message")
        .map((ev) => ({
            sender: ev.getSender(),
            wire_type: ev.getWireType(),
            type: ev.getType(),
            body: ev.getContent()?.body ?? null,
            decryption_failure: ev.isDecryptionFailure(),
            algorithm: ev.getWireContent()?.algorithm ?? null,
        }));
}

async function waitForMessage(client, roomId, sender, body, timeoutMs = 45000) {
    return await until(
        `${client.getUserId()} to decrypt ${JSON.stringify(body)}`,
        () =>
            messages(client, roomId).find(
                (m) => m.sender === sender && m.type === "m.room.message" && m.body === body,
            ),
        timeoutMs,
    );
}

async function joinWhenInvited(client, roomId) {
    await until(`${client.getUserId()} to see the invite`, () => {
        const m = client.getRoom(roomId)?.getMyMembership();
        return m === "invite" || m === "join";
    });
    if (client.getRoom(roomId).getMyMembership() === "invite") await client.joinRoom(roomId);
    await until(`${client.getUserId()} to be joined and see encryption`, async () => {
        const room = client.getRoom(roomId);
        return (
            room?.getMyMembership() === "join" &&
            (await client.getCrypto().isEncryptionEnabledInRoom(roomId))
        );
    });
}

async function waitMemberJoined(client, roomId, userId) {
    await until(`${client.getUserId()} to see ${userId} joined`, async () => {
        const room = client.getRoom(roomId);
        if (!room) return false;
        await room.loadMembersIfNeeded();
        return room.getMember(userId)?.membership === "join";
    });
}

function stopAll(clients) {
    for (const c of clients) {
        try {
            c.stopClient();
        } catch {
            /* stopping is best effort */
        }
    }
}

async function pair(baseUrl, roomVersion, helloBody, replyBody) {
    const suffix = Math.random().toString(36).slice(2, 8);
    const password = "correct horse battery";
    const aCreds = await register(baseUrl, `jsalice${suffix}`, password);
    const bCreds = await register(baseUrl, `jsbob${suffix}`, password);
    const alice = await start(baseUrl, aCreds);
    const bob = await start(baseUrl, bCreds);
    emit({ event: "started", alice: aCreds.user_id, bob: bCreds.user_id });
    try {
        const opts = {
            invite: [bCreds.user_id],
            initial_state: [
                {
                    type: "m.room.encryption",
                    state_key: "",
                    content: { algorithm: "m.megolm.v1.aes-sha2" },
                },
            ],
        };
        if (roomVersion && roomVersion !== "default") opts.room_version = roomVersion;
        const { room_id: roomId } = await alice.createRoom(opts);
        emit({ event: "room", room_id: roomId });
        await until("alice to see the room encrypted", () =>
            alice.getCrypto().isEncryptionEnabledInRoom(roomId),
        );
        await joinWhenInvited(bob, roomId);
        await waitMemberJoined(alice, roomId, bCreds.user_id);

        await alice.sendMessage(roomId, { msgtype: "m.text", body: helloBody });
        const atBob = await waitForMessage(bob, roomId, aCreds.user_id, helloBody);
        await bob.sendMessage(roomId, { msgtype: "m.text", body: replyBody });
        const atAlice = await waitForMessage(alice, roomId, bCreds.user_id, replyBody);

        const createEv = alice.getRoom(roomId).currentState.getStateEvents("m.room.create", "");
        return {
            ok: true,
            room_id: roomId,
            room_version: createEv?.getContent()?.room_version ?? null,
            alice: aCreds.user_id,
            bob: bCreds.user_id,
            bob_saw: atBob,
            alice_saw: atAlice,
            alice_messages: messages(alice, roomId),
            bob_messages: messages(bob, roomId),
            seconds: (Date.now() - T0) / 1000,
        };
    } finally {
        stopAll([alice, bob]);
    }
}

async function joinAndTalk(baseUrl, userId, password, roomId, sendBody, expectBody) {
    const creds = await login(baseUrl, userId, password);
    const client = await start(baseUrl, creds);
    emit({ event: "started", user_id: creds.user_id, device_id: creds.device_id });
    try {
        await joinWhenInvited(client, roomId);
        emit({ event: "joined", room_id: roomId });
        await client.sendMessage(roomId, { msgtype: "m.text", body: sendBody });
        emit({ event: "sent", body: sendBody });
        const got = await until(`${userId} to decrypt ${JSON.stringify(expectBody)}`, () =>
            messages(client, roomId).find(
                (m) => m.sender !== userId && m.type === "m.room.message" && m.body === expectBody,
            ),
            60000,
        );
        return {
            ok: true,
            user_id: creds.user_id,
            device_id: creds.device_id,
            room_id: roomId,
            saw: got,
            messages: messages(client, roomId),
            seconds: (Date.now() - T0) / 1000,
        };
    } finally {
        stopAll([client]);
    }
}

const [mode, ...args] = process.argv.slice(2);
let result;
try {
    if (mode === "pair") result = await pair(...args);
    else if (mode === "join") result = await joinAndTalk(...args);
    else throw new Error(`unknown mode ${mode}`);
} catch (e) {
    result = { ok: false, error: String(e?.stack || e), seconds: (Date.now() - T0) / 1000 };
}
result.requests = requests;
emit({ result });
// The SDK keeps timers (e.g. key backup, retries); do not wait for them.
process.exit(result.ok ? 0 : 1);
