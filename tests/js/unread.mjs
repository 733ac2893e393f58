// Unread counts and read receipts through matrix-js-sdk, in the main timeline and in a thread
// (C-S API "Receiving notifications", "Marking notifications as read", "Receipts" →
// "Threaded read receipts"). Driven by tests/acceptance/test_unread_js.py.
//
//   node unread.mjs counts <baseUrl> <aliceJson> <bobJson>
//       alice and bob (registered by the Python side: {user_id, access_token, device_id}) share
//       a room; bob's client runs with thread support, as Element does, so its /sync filter asks
//       for unread_thread_notifications. alice's messages raise bob's counts (a mention raises
//       the highlight count); bob's read receipt clears them. alice's replies in a thread raise
//       that thread's count while the main timeline's stays put; a fresh client of bob's finds
//       the same counts in its initial /sync; a threaded receipt (on alice's reaction to a
//       reply, which is in the thread too) clears the thread and not the main timeline; an
//       unthreaded receipt clears everything, and a private one (from another client of bob's)
//       what came after.
//
// Progress lines go to stdout as JSON objects; the last line is {"result": ...}.

import { sdk, run, emit, until, client, started } from "./common.mjs";

const { NotificationCountType, ReceiptType } = sdk;
const TOTAL = NotificationCountType.Total;
const HIGHLIGHT = NotificationCountType.Highlight;

// What bob's client shows: the room's total and highlight counts (main timeline and threads),
// the main timeline's alone, and each thread's.
function counts(room, threadIds = []) {
    const out = {
        total: room.getUnreadNotificationCount(TOTAL),
        highlight: room.getUnreadNotificationCount(HIGHLIGHT),
        main: room.getRoomUnreadNotificationCount(TOTAL),
        main_highlight: room.getRoomUnreadNotificationCount(HIGHLIGHT),
    };
    for (const id of threadIds) {
        out[id] = [
            room.getThreadUnreadNotificationCount(id, TOTAL),
            room.getThreadUnreadNotificationCount(id, HIGHLIGHT),
        ];
    }
    return out;
}

// Waits until bob's counts equal `want` (every key given) and returns them.
async function countsAre(what, room, want, threadIds = []) {
    let last = null;
    try {
        return await until(what, () => {
            last = counts(room, threadIds);
            return JSON.stringify(pick(last, want)) === JSON.stringify(want) ? last : null;
        }, 15000);
    } catch (e) {
        throw new Error(`${e.message}: want ${JSON.stringify(want)}, have ${JSON.stringify(last)}`);
    }
}

function pick(obj, keysOf) {
    return Object.fromEntries(Object.keys(keysOf).map((k) => [k, obj[k]]));
}

const message = (body, extra = {}) => ({ msgtype: "m.text", body, ...extra });

async function countsScenario(baseUrl, aliceJson, bobJson) {
    const aliceCreds = JSON.parse(aliceJson);
    const bobCreds = JSON.parse(bobJson);
    const alice = client(baseUrl, aliceCreds);
    const bob = client(baseUrl, bobCreds);
    await started(bob, { threadSupport: true });
    const clients = [bob];
    try {
        const { room_id: roomId } = await alice.createRoom({ name: "Unread", preset: "public_chat" });
        await bob.joinRoom(roomId);
        const room = await until("the room at bob", () => {
            const r = bob.getRoom(roomId);
            return r?.getMyMembership() === "join" ? r : null;
        });
        const event = (id) => until(`event ${id} at bob`, () => room.findEventById(id));
        const steps = {};

        // The main timeline: alice's messages raise bob's counts one by one, a mention the
        // highlight count too.
        const rising = [];
        for (const body of ["one", "two"]) {
            await alice.sendEvent(roomId, "m.room.message", message(body));
            rising.push(await countsAre(`count after ${body}`, room, { total: rising.length + 1 }));
        }
        const { event_id: mentionId } = await alice.sendEvent(roomId, "m.room.message", message(
            `${bob.getUserId()}: have a look`, { "m.mentions": { user_ids: [bob.getUserId()] } },
        ));
        rising.push(await countsAre("the mention", room, { total: 3, highlight: 1 }));
        steps.rising = rising;
        emit({ step: "rising", rising });

        // bob reads the latest message: everything is read.
        await bob.sendReadReceipt(await event(mentionId));
        steps.read = await countsAre("counts cleared", room, { total: 0, highlight: 0 });
        // The server cleared them (not only the client): the next message counts from zero.
        await alice.sendEvent(roomId, "m.room.message", message("after the receipt"));
        steps.after_read = await countsAre("one new message", room, { total: 1, highlight: 0 });
        emit({ step: "read", read: steps.read, after: steps.after_read });

        // A thread: the root is in the main timeline; replies count in the thread only.
        const { event_id: rootId } = await alice.sendEvent(roomId, "m.room.message",
            message("a thread starts here"));
        const main = 2; // "after the receipt" and the root
        await countsAre("the root", room, { main, total: main });
        const inThread = (body, extra = {}) => message(body, {
            "m.relates_to": {
                rel_type: "m.thread",
                event_id: rootId,
                is_falling_back: true,
                "m.in_reply_to": { event_id: rootId },
            },
            ...extra,
        });
        const threadRising = [];
        await alice.sendEvent(roomId, "m.room.message", inThread("first reply"));
        threadRising.push(await countsAre("the first reply", room,
            { [rootId]: [1, 0], main, total: main + 1 }, [rootId]));
        const { event_id: replyId } = await alice.sendEvent(roomId, "m.room.message",
            inThread(`${bob.getUserId()}: and you?`,
                { "m.mentions": { user_ids: [bob.getUserId()] } }));
        threadRising.push(await countsAre("the mention in the thread", room,
            { [rootId]: [2, 1], main, main_highlight: 0, total: main + 2, highlight: 1 },
            [rootId]));
        steps.thread_rising = threadRising;
        emit({ step: "thread rising", threadRising });

        // A fresh start of bob's client: its initial /sync brings the same counts.
        const fresh = client(baseUrl, bobCreds);
        clients.push(fresh);
        await started(fresh, { threadSupport: true });
        const freshRoom = await until("the room on the fresh client", () => fresh.getRoom(roomId));
        steps.fresh = await countsAre("counts on the fresh client", freshRoom,
            { [rootId]: [2, 1], main, main_highlight: 0 }, [rootId]);
        fresh.stopClient();
        clients.pop();
        emit({ step: "fresh", fresh: steps.fresh });

        // alice reacts to bob's mention in the thread: a reaction to a reply is in the thread
        // (the spec's "3 hops"), and notifies nobody.
        const { event_id: reactionId } = await alice.sendEvent(roomId, "m.reaction", {
            "m.relates_to": { rel_type: "m.annotation", event_id: replyId, key: "👀" },
        });
        const reaction = await event(reactionId);
        steps.reaction_thread = reaction.threadRootId ?? null;

        // A threaded receipt on it (js-sdk sends thread_id = the root): the thread is read,
        // the main timeline is not.
        await bob.sendReadReceipt(reaction);
        steps.thread_read = await countsAre("the thread read", room,
            { [rootId]: [0, 0], main, total: main, highlight: 0 }, [rootId]);
        // Another reply: the thread counts from its receipt on, the main timeline still waits.
        const { event_id: lastReplyId } = await alice.sendEvent(roomId, "m.room.message",
            inThread("one more"));
        steps.thread_again = await countsAre("one more in the thread", room,
            { [rootId]: [1, 0], main, total: main + 1 }, [rootId]);
        emit({ step: "thread read", read: steps.thread_read, again: steps.thread_again });

        // A threaded receipt that names another thread than its event's is refused.
        steps.wrong_thread = await refused(bob, roomId, lastReplyId, { thread_id: "main" });

        // An unthreaded receipt on the latest reply: the main timeline and the thread are read.
        await bob.sendReadReceipt(await event(lastReplyId), ReceiptType.Read, true);
        steps.all_read = await countsAre("everything read", room,
            { [rootId]: [0, 0], main: 0, total: 0, highlight: 0 }, [rootId]);
        const { event_id: endId } = await alice.sendEvent(roomId, "m.room.message",
            message("the end"));
        steps.after_all = await countsAre("one new message at the end", room,
            { [rootId]: [0, 0], main: 1, total: 1 }, [rootId]);

        // And a fresh client agrees.
        const last = client(baseUrl, bobCreds);
        clients.push(last);
        await started(last, { threadSupport: true });
        const lastRoom = await until("the room on the last client", () => last.getRoom(roomId));
        steps.fresh_end = await countsAre("counts on the last client", lastRoom,
            { [rootId]: [0, 0], main: 1, total: 1, highlight: 0 }, [rootId]);
        // A private read receipt (seen by nobody else) clears the count as well.
        const end = await until("the last message on the last client",
            () => lastRoom.findEventById(endId));
        await last.sendReadReceipt(end, ReceiptType.ReadPrivate);
        steps.private_read = await countsAre("the private receipt", room,
            { main: 0, total: 0 });
        return { ok: true, room_id: roomId, root_id: rootId, ...steps };
    } finally {
        for (const c of clients) c.stopClient();
    }
}

// A receipt sent by hand with `body`: the error it gets (null when accepted).
async function refused(c, roomId, eventId, body) {
    const enc = encodeURIComponent;
    try {
        await c.http.authedRequest(sdk.Method.Post,
            `/rooms/${enc(roomId)}/receipt/m.read/${enc(eventId)}`, undefined, body);
        return null;
    } catch (e) {
        return { status: e.httpStatus ?? null, errcode: e.errcode ?? null };
    }
}

await run({ counts: (baseUrl, alice, bob) => countsScenario(baseUrl, alice, bob) });
