// A room upgrade through matrix-js-sdk (C-S API "Room Upgrades").
// Driven by tests/acceptance/test_room_upgrade_js.py.
//
//   node upgrade.mjs follow <baseUrl>
//       alice creates an invite-only room (version 11) with bob in it, and upgrades it to
//       version 12 (upgradeRoom). Bob's client sees the tombstone, follows its
//       replacement_room (joinRoom with the sender's server as via, as the spec advises), and
//       both talk in the new room; getRoomUpgradeHistory with verified links gives
//       [old room, new room] on both sides, and bob can no longer post in the old room.
//
// Progress lines go to stdout as JSON objects; the last line is {"result": ...}.

import { run, emit, until, register, client, started } from "./common.mjs";

function messages(room) {
    return (room?.getLiveTimeline().getEvents() ?? [])
        .filter((e) => e.getType() === "m.room.message")
        .map((e) => e.getContent().body);
}

async function follow(baseUrl) {
    const stamp = Date.now().toString(36);
    const alice = client(baseUrl, await register(baseUrl, `upa${stamp}`));
    const bob = client(baseUrl, await register(baseUrl, `upb${stamp}`));
    await started(alice);
    await started(bob);
    try {
        const { room_id: oldId } = await alice.createRoom({
            name: "Before the upgrade",
            preset: "private_chat",
            room_version: "11",
            invite: [bob.getUserId()],
        });
        await until("bob's invite", () => bob.getRoom(oldId)?.getMyMembership() === "invite");
        await bob.joinRoom(oldId);
        await alice.sendTextMessage(oldId, "see you on the other side");
        await until("the message at bob", () => messages(bob.getRoom(oldId)).length > 0);
        emit({ step: "old room", oldId });

        const { replacement_room: newId } = await alice.upgradeRoom(oldId, "12");
        emit({ step: "upgraded", newId });

        // Bob's client sees the tombstone and follows it.
        const tombstone = await until("the tombstone at bob", () =>
            bob.getRoom(oldId)?.currentState.getStateEvents("m.room.tombstone", ""),
        );
        const replacement = tombstone.getContent().replacement_room;
        const via = tombstone.getSender().split(":").slice(1).join(":");
        await bob.joinRoom(replacement, { viaServers: [via] });
        const newRoom = await until("the new room at bob", () => {
            const r = bob.getRoom(replacement);
            return r?.getMyMembership() === "join" ? r : null;
        });
        const predecessor = newRoom.findPredecessor();
        await bob.sendTextMessage(replacement, "followed");
        await until("bob's message at alice", () =>
            messages(alice.getRoom(newId)).includes("followed"),
        );
        await alice.sendTextMessage(newId, "welcome");
        await until("alice's message at bob", () => messages(newRoom).includes("welcome"));
        const history = (c) => c.getRoomUpgradeHistory(newId, true).map((r) => r.roomId);
        const historyAlice = await until("alice's verified history", () => {
            const h = history(alice);
            return h.length === 2 ? h : null;
        });
        const historyBob = await until("bob's verified history", () => {
            const h = history(bob);
            return h.length === 2 ? h : null;
        });

        let oldSend = null;
        try {
            await bob.sendTextMessage(oldId, "still here?");
            oldSend = { accepted: true };
        } catch (e) {
            oldSend = { status: e.httpStatus ?? null, errcode: e.errcode ?? null };
        }
        return {
            ok: true,
            old_id: oldId,
            new_id: newId,
            replacement,
            predecessor_room: predecessor?.roomId ?? null,
            name: newRoom.name,
            version: newRoom.getVersion(),
            history_alice: historyAlice,
            history_bob: historyBob,
            old_send: oldSend,
        };
    } finally {
        alice.stopClient();
        bob.stopClient();
    }
}

await run({ "follow": (baseUrl) => follow(baseUrl) });
