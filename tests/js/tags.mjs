// Favourites and room tags through matrix-js-sdk (C-S API "Room Tagging").
// Driven by tests/acceptance/test_tags_js.py.
//
//   node tags.mjs favourites <baseUrl>
//       alice, on her first device, creates a room and marks it as a favourite
//       (setRoomTag(roomId, "m.favourite", {order: 0.5})) and adds a tag of her own; her second
//       device, syncing, sees both on the room (room.tags, from the m.tag room account data),
//       then sees them change and go when the first device moves and removes them.
//
// Progress lines go to stdout as JSON objects; the last line is {"result": ...}.

import { sdk, run, emit, PASSWORD, until, register, client, started } from "./common.mjs";

const USER_TAG = "u.my work"; // a space: percent-encoded in the path by the SDK

async function favourites(baseUrl) {
    const username = `fav${Date.now().toString(36)}`;
    const creds = await register(baseUrl, username);
    const first = client(baseUrl, creds);
    // The same user's second device, logged in with the password.
    const login = await sdk.createClient({ baseUrl }).loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: username },
        password: PASSWORD,
    });
    if (login.device_id === creds.device_id) throw new Error("the second login reused the device");
    const second = client(baseUrl, login);
    await started(second);
    try {
        const { room_id: roomId } = await first.createRoom({ name: "Favourite room" });
        await until("the room on the second device", () => second.getRoom(roomId));
        emit({ step: "room", roomId });

        await first.setRoomTag(roomId, "m.favourite", { order: 0.5 });
        await first.setRoomTag(roomId, USER_TAG, {});
        const seen = await until("the tags on the second device", () => {
            const tags = second.getRoom(roomId)?.tags ?? {};
            return tags["m.favourite"] && tags[USER_TAG] ? structuredClone(tags) : null;
        });
        emit({ step: "tagged", seen });
        const listed = await first.getRoomTags(roomId);

        // Moved to low priority: the favourite goes, m.lowpriority comes.
        await first.deleteRoomTag(roomId, "m.favourite");
        await first.setRoomTag(roomId, "m.lowpriority", { order: 0.25 });
        const moved = await until("the move on the second device", () => {
            const tags = second.getRoom(roomId)?.tags ?? {};
            return !tags["m.favourite"] && tags["m.lowpriority"] ? structuredClone(tags) : null;
        });
        emit({ step: "moved", moved });

        await first.deleteRoomTag(roomId, "m.lowpriority");
        await first.deleteRoomTag(roomId, USER_TAG);
        const cleared = await until("no tags on the second device", () => {
            const tags = second.getRoom(roomId)?.tags;
            return tags && Object.keys(tags).length === 0 ? structuredClone(tags) : null;
        });

        // Another user cannot set alice's tags.
        const mallory = client(baseUrl, await register(baseUrl, `mal${Date.now().toString(36)}`));
        let refused = null;
        try {
            const enc = encodeURIComponent;
            await mallory.http.authedRequest(
                sdk.Method.Put,
                `/user/${enc(creds.user_id)}/rooms/${enc(roomId)}/tags/m.favourite`,
                undefined,
                { order: 0.1 },
            );
            refused = { accepted: true };
        } catch (e) {
            refused = { status: e.httpStatus ?? null, errcode: e.errcode ?? null, error: String(e) };
        }
        return {
            ok: true,
            room_id: roomId,
            seen,
            listed,
            moved,
            cleared,
            refused,
            after: await first.getRoomTags(roomId),
        };
    } finally {
        second.stopClient();
    }
}

await run({ "favourites": (baseUrl) => favourites(baseUrl) });
