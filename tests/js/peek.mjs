// Room previews through matrix-js-sdk's peekInRoom (C-S API "Room Previews": the SDK reads
// GET /rooms/{roomId}/initialSync, then follows the room with GET /events?room_id=).
// Driven by tests/acceptance/test_peek_js.py.
//
//   node peek.mjs world_readable <baseUrl>
//       alice creates a world_readable public room, names it and says "before"; carol, not a
//       member, peeks into it: the SDK's room has the name, the message and alice's
//       membership; alice's next message reaches carol's peeked room live; carol stops peeking.
//       carol's peek into a room with shared history (members only) is refused with 403.
//
// Progress lines go to stdout as JSON objects; the last line is {"result": ...}.

import { run, emit, until, register, client, started } from "./common.mjs";

const bodies = (room) =>
    room
        .getLiveTimeline()
        .getEvents()
        .filter((e) => e.getType() === "m.room.message")
        .map((e) => e.getContent().body);

async function worldReadable(baseUrl) {
    const stamp = Date.now().toString(36);
    const alice = client(baseUrl, await register(baseUrl, `peeka${stamp}`));
    const carol = client(baseUrl, await register(baseUrl, `peekc${stamp}`));
    const { room_id: roomId } = await alice.createRoom({
        name: "Open book",
        preset: "public_chat",
        initial_state: [
            {
                type: "m.room.history_visibility",
                state_key: "",
                content: { history_visibility: "world_readable" },
            },
        ],
    });
    await alice.sendTextMessage(roomId, "before");
    await started(carol);
    try {
        const room = await carol.peekInRoom(roomId);
        const first = {
            name: room.name,
            bodies: bodies(room),
            aliceJoined: room.getMember(alice.getUserId())?.membership ?? null,
        };
        emit({ step: "peeked", first });

        await alice.sendTextMessage(roomId, "live");
        const live = await until("the live message in the peeked room", () =>
            bodies(room).includes("live") ? bodies(room) : null,
        );
        emit({ step: "live", live });
        carol.stopPeeking();

        const { room_id: shut } = await alice.createRoom({ preset: "public_chat" });
        let refused = null;
        try {
            await carol.peekInRoom(shut);
        } catch (e) {
            refused = { status: e.httpStatus ?? null, errcode: e.errcode ?? null };
        }
        carol.stopPeeking();
        return { ok: true, first, live, refused };
    } finally {
        carol.stopClient();
    }
}

await run({ world_readable: worldReadable });
