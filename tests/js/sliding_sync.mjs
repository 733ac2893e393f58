// Simplified sliding sync (MSC4186) through matrix-js-sdk's SlidingSync (the class Element
// Web's sliding sync mode drives). Driven by tests/acceptance/test_sliding_sync_js.py.
//
//   node sliding_sync.mjs rooms <baseUrl> <userId> <accessToken> <deviceId>
//       alice has three rooms; a SlidingSync with one list (ranges [0, 1], timeline_limit 5,
//       the room name as required state) gets the two most recently active rooms and the
//       list's count; a message in the third brings it into the window on the long-polled
//       incremental request (pos); a room subscription brings a room the window never held.
//
// Progress lines go to stdout as JSON objects; the last line is {"result": ...}.

import { sdk, run, emit, until, client } from "./common.mjs";

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

await run({ rooms: (baseUrl, ...rest) => rooms(baseUrl, ...rest) });
