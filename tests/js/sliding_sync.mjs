// Simplified sliding sync (MSC4186) through matrix-js-sdk's SlidingSync (the class Element
// Web's sliding sync mode drives). Driven by tests/acceptance/test_sliding_sync_js.py.
//
//   node sliding_sync.mjs rooms <baseUrl> <userId> <accessToken> <deviceId>
//       alice has three rooms; a SlidingSync with one list (ranges [0, 1], timeline_limit 5,
//       the room name as required state) gets the two most recently active rooms and the
//       list's count; a message in the third brings it into the window on the long-polled
//       incremental request (pos); a room subscription brings a room the window never held.
//   node sliding_sync.mjs e2ee <baseUrl> <aliceJson> <bobJson> <firstBody> <secondBody>
//       (each JSON: {"user_id", "access_token", "device_id"}) alice runs the ordinary /sync with
//       Rust crypto; bob's client syncs only through sliding sync (client.startClient with a
//       SlidingSync, so the SDK's extensions: to_device, e2ee, account_data, typing, receipts)
//       with Rust crypto. alice creates an encrypted room and invites bob; bob's list shows the
//       invite, bob joins, alice sends <firstBody> encrypted: bob gets the room key as a to-device
//       message through the to_device extension and decrypts it; <secondBody> arrives live on a
//       later incremental response and decrypts too.
//
// Progress lines go to stdout as JSON objects; the last line is {"result": ...}.

import { sdk, run, emit, until, client } from "./common.mjs";

const ENCRYPTION = "m.megolm.v1.aes-sha2";

const { SlidingSync, SlidingSyncEvent } = await import("matrix-js-sdk/lib/sliding-sync.js");

async function rooms(baseUrl, userId, accessToken, deviceId) {
    // The user is registered by the Python side (and exempted from the spam guard: this
    // script sends several messages within a second).
    const alice = client(baseUrl, { user_id: userId, access_token: accessToken, device_id: deviceId });
    // The least active room: created and written to first (outside the window throughout).
    const { room_id: hidden } = await alice.createRoom({ name: "Hidden" });
    await alice.sendTextMessage(hidden, "over there");
    const ids = [];
    for (const name of ["First", "Second", "Third"]) {
        ids.push((await alice.createRoom({ name })).room_id);
    }
    // Activity order now: Third, Second, First.
    const seen = new Map(); // roomId -> {name, bodies: [...]}
    const lists = new Map([
        ["all", { ranges: [[0, 1]], timeline_limit: 5, required_state: [["m.room.name", ""]] }],
    ]);
    const ss = new SlidingSync(baseUrl, lists, { timeline_limit: 3, required_state: [] }, alice, 5000);
    ss.on(SlidingSyncEvent.RoomData, (roomId, data) => {
        const entry = seen.get(roomId) ?? { name: null, bodies: [], initial: false };
        if (data.name) entry.name = data.name;
        if (data.initial) entry.initial = true;
        for (const ev of data.timeline) {
            if (ev.type === "m.room.message") entry.bodies.push(ev.content.body);
        }
        seen.set(roomId, entry);
    });
    ss.start();
    try {
        await until("the first window", () => seen.size === 2);
        const firstWindow = [...seen.keys()].sort();
        const count = ss.getListData("all")?.joinedCount ?? null;
        emit({ step: "window", firstWindow, count });

        // A message in the oldest room: it becomes the most recent, so it enters the window.
        await alice.sendTextMessage(ids[0], "still here");
        const moved = await until("the message", () =>
            seen.get(ids[0])?.bodies.includes("still here") ? structuredClone(seen.get(ids[0])) : null,
        );
        emit({ step: "moved", moved });

        // Subscribing to a room the window never held (the least active one): it comes whole.
        ss.modifyRoomSubscriptions(new Set([hidden]));
        const subscribed = await until("the subscribed room", () =>
            seen.get(hidden)?.initial ? structuredClone(seen.get(hidden)) : null,
        );
        return {
            ok: true,
            ids,
            hidden,
            firstWindow,
            count,
            moved,
            subscribed,
        };
    } finally {
        ss.stop();
    }
}

// Bob's view of the sliding sync responses, from the wire: the to-device messages each carried,
// and the rooms each carried (with their `initial` flag and timeline event IDs).
function recorder() {
    const log = { requests: [], responses: [] };
    async function fetchFn(input, init = {}) {
        const url = new URL(input instanceof Request ? input.url : String(input));
        const res = await fetch(input, init);
        log.requests.push([(init.method || "GET").toUpperCase(), url.pathname]);
        if (url.pathname.endsWith("/org.matrix.simplified_msc3575/sync") && res.ok) {
            const body = await res.clone().json();
            const request = typeof init.body === "string" ? JSON.parse(init.body) : {};
            const toDevice = body.extensions?.to_device;
            log.responses.push({
                pos: url.searchParams.get("pos"),
                since: request.extensions?.to_device?.since ?? null,
                next_batch: toDevice?.next_batch ?? null,
                to_device: (toDevice?.events ?? []).map((e) => ({
                    type: e.type,
                    sender: e.sender,
                    algorithm: e.content?.algorithm ?? null,
                })),
                e2ee: body.extensions?.e2ee ?? null,
                rooms: Object.fromEntries(
                    Object.entries(body.rooms ?? {}).map(([id, r]) => [
                        id,
                        {
                            initial: r.initial ?? false,
                            invite: "invite_state" in r,
                            events: (r.timeline ?? []).map((e) => e.event_id),
                        },
                    ]),
                ),
            });
        }
        return res;
    }
    return { log, fetchFn };
}

function decrypted(c, roomId, body) {
    const ev = c
        .getRoom(roomId)
        ?.getLiveTimeline()
        .getEvents()
        .find((e) => e.getClearContent()?.body === body);
    if (!ev || ev.isDecryptionFailure()) return null;
    return {
        event_id: ev.getId(),
        sender: ev.getSender(),
        wire_type: ev.getWireType(),
        algorithm: ev.getWireContent()?.algorithm ?? null,
        type: ev.getType(),
        body: ev.getClearContent()?.body ?? null,
        decryption_failure: ev.isDecryptionFailure(),
    };
}

async function e2ee(baseUrl, aliceJson, bobJson, firstBody, secondBody) {
    const aCreds = JSON.parse(aliceJson);
    const bCreds = JSON.parse(bobJson);
    // alice: the ordinary /sync and Rust crypto.
    const alice = client(baseUrl, aCreds);
    await alice.initRustCrypto({ useIndexedDB: false });
    const alicePrepared = new Promise((resolve) => {
        alice.on(sdk.ClientEvent.Sync, (state) => {
            if (state === "PREPARED" || state === "SYNCING") resolve();
        });
    });
    await alice.startClient({ initialSyncLimit: 10, lazyLoadMembers: true });
    await alicePrepared;

    // bob: sliding sync only, with Rust crypto.
    const { log, fetchFn } = recorder();
    const bob = sdk.createClient({
        baseUrl,
        userId: bCreds.user_id,
        accessToken: bCreds.access_token,
        deviceId: bCreds.device_id,
        fetchFn,
    });
    await bob.initRustCrypto({ useIndexedDB: false });
    const required = [
        ["m.room.create", ""],
        ["m.room.encryption", ""],
        ["m.room.name", ""],
        ["m.room.member", "$ME"],
        ["m.room.member", "$LAZY"],
    ];
    const lists = new Map([
        ["all", { ranges: [[0, 19]], timeline_limit: 10, required_state: required }],
    ]);
    const ss = new SlidingSync(baseUrl, lists, { timeline_limit: 10, required_state: required }, bob, 5000);
    const bobPrepared = new Promise((resolve, reject) => {
        bob.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
            if (state === "PREPARED" || state === "SYNCING") resolve();
            if (state === "ERROR") reject(new Error(`sync error: ${data?.error}`));
        });
    });
    const roomKeys = []; // the to-device messages bob's crypto decrypted
    bob.on(sdk.ClientEvent.ReceivedToDeviceMessage, ({ message, encryptionInfo }) => {
        roomKeys.push({
            type: message.type,
            sender: message.sender,
            encrypted: encryptionInfo !== null,
            room_id: message.content?.room_id ?? null,
        });
    });
    const liveAtBob = []; // timeline events bob's client took as live
    bob.on(sdk.RoomEvent.Timeline, (ev, _room, toStart, _removed, data) => {
        if (!toStart && data?.liveEvent) liveAtBob.push(ev.getId());
    });
    await bob.startClient({ slidingSync: ss });
    try {
        await bobPrepared;
        // bob's keys are on the server (uploaded after his first sliding sync response).
        await until("bob's device keys", async () => {
            const keys = await alice.downloadKeysForUsers([bCreds.user_id]);
            return keys.device_keys?.[bCreds.user_id]?.[bCreds.device_id] ?? null;
        });

        const { room_id: roomId } = await alice.createRoom({
            name: "Secret",
            invite: [bCreds.user_id],
            initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: ENCRYPTION } }],
        });
        emit({ step: "room", roomId });
        await until("alice to see the room encrypted", () => alice.getCrypto().isEncryptionEnabledInRoom(roomId));

        // The invite reaches bob through his list.
        await until("bob to see the invite", () => bob.getRoom(roomId)?.getMyMembership() === "invite");
        const invitedCount = ss.getListData("all")?.joinedCount ?? null;
        await bob.joinRoom(roomId);
        await until("bob to be joined in an encrypted room", async () => {
            const room = bob.getRoom(roomId);
            return (
                room?.getMyMembership() === "join" &&
                room.getMember(bCreds.user_id)?.membership === "join" &&
                (await bob.getCrypto().isEncryptionEnabledInRoom(roomId))
            );
        });
        await until("alice to see bob joined", async () => {
            const room = alice.getRoom(roomId);
            await room?.loadMembersIfNeeded();
            return room?.getMember(bCreds.user_id)?.membership === "join";
        });

        await alice.sendMessage(roomId, { msgtype: "m.text", body: firstBody });
        const first = await until("bob to decrypt the first message", () => decrypted(bob, roomId, firstBody));
        emit({ step: "first", first });

        await alice.sendMessage(roomId, { msgtype: "m.text", body: secondBody });
        const second = await until("bob to decrypt the second message", () => decrypted(bob, roomId, secondBody));

        const listed = bob.getRooms().map((r) => ({ room_id: r.roomId, name: r.name, membership: r.getMyMembership() }));
        return {
            ok: true,
            roomId,
            invitedCount,
            joinedCount: ss.getListData("all")?.joinedCount ?? null,
            listed,
            first,
            second,
            secondLive: liveAtBob.includes(second.event_id),
            roomKeys,
            responses: log.responses,
            requests: log.requests,
        };
    } finally {
        ss.stop();
        bob.stopClient();
        alice.stopClient();
    }
}

await run({
    rooms: (baseUrl, ...rest) => rooms(baseUrl, ...rest),
    e2ee: (baseUrl, ...rest) => e2ee(baseUrl, ...rest),
});
