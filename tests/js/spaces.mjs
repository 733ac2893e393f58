// A space with a child room on another Bastion, through matrix-js-sdk (C-S API "Spaces",
// GET /v1/rooms/{roomId}/hierarchy; S-S API "Spaces"). Driven by
// tests/acceptance/test_spaces_js.py.
//
//   node spaces.mjs remote-child <baseUrlA> <baseUrlB> <serverNameB>
//       bob, on B, creates a public room and a private one; alice, on A, creates a space and
//       adds both as children (via B); alice's getRoomHierarchy lists the space and B's public
//       room with its summary (asked of B over federation), not the private one; she joins the
//       public room through the via server the hierarchy gave.
//
// Progress lines go to stdout as JSON objects; the last line is {"result": ...}.

import { run, emit, register, client } from "./common.mjs";

async function remoteChild(baseA, baseB, serverB) {
    const stamp = Date.now().toString(36);
    const alice = client(baseA, await register(baseA, `sp${stamp}a`));
    const bob = client(baseB, await register(baseB, `sp${stamp}b`));
    const { room_id: garden } = await bob.createRoom({
        name: "Garden", topic: "Plants and such", preset: "public_chat",
    });
    const { room_id: shed } = await bob.createRoom({ name: "Shed", preset: "private_chat" });
    emit({ step: "remote rooms", garden, shed });
    const { room_id: space } = await alice.createRoom({
        name: "Home",
        preset: "public_chat",
        creation_content: { type: "m.space" },
        power_level_content_override: { events_default: 100 },
    });
    const gardenChild = { via: [serverB], order: "a", suggested: true };
    await alice.sendStateEvent(space, "m.space.child", gardenChild, garden);
    await alice.sendStateEvent(space, "m.space.child", { via: [serverB], order: "b" }, shed);
    emit({ step: "space", space });

    const page = await alice.getRoomHierarchy(space, 20, 2, false);
    const suggested = await alice.getRoomHierarchy(space, 20, 2, true);
    const small = await alice.getRoomHierarchy(space, 1, 2, false);
    const rest = await alice.getRoomHierarchy(space, 20, 2, false, small.next_batch);
    const via = page.rooms[0].children_state.find((c) => c.state_key === garden)?.content?.via;
    const joined = await alice.joinRoom(garden, { viaServers: via });
    return {
        ok: true,
        space,
        garden,
        shed,
        rooms: page.rooms,
        next_batch: page.next_batch ?? null,
        suggested: suggested.rooms.map((r) => r.room_id),
        paged: [small.rooms.map((r) => r.room_id), rest.rooms.map((r) => r.room_id)],
        small_next: typeof small.next_batch,
        joined: joined.roomId,
    };
}

await run({ "remote-child": (...args) => remoteChild(...args) });
