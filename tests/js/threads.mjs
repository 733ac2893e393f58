// Threads, reactions, edits and search through matrix-js-sdk (C-S API "Threading", "Event
// annotations and reactions", "Event replacements", "Aggregations of child events", "Server
// Side Search"). Driven by tests/acceptance/test_threads_js.py.
//
//   node threads.mjs thread <baseUrl>
//       alice creates a room and bob joins; alice posts a root, bob replies twice in its thread
//       (m.thread) and alice reacts to the first reply (m.annotation). Bob's client (thread
//       support on) sees the thread with both replies, its reply count and the reaction. Then,
//       with the thread pushed out of the initial sync window by newer messages, a new device
//       of bob's finds it from scratch as Element's thread panel does: the thread list
//       (/threads, with the roots' bundled m.thread summaries), then the thread's events
//       (/relations, recursive, so the reaction comes with them).
//
//   node threads.mjs edit <baseUrl>
//       alice sends a message and edits it (m.replace with m.new_content); bob's client shows
//       the new body live. A new device of bob's shows it from its initial /sync, where the
//       original carries the server's bundled m.replace. A third device syncing only events
//       with a URL (contains_url, as a files view does) gets alice's file but not the edit of
//       its caption (the edit carries no URL): it shows the new caption from the bundle alone.
//
//   node threads.mjs search <baseUrl>
//       alice posts three messages; bob finds the middle one with searchRoomEvents, with the
//       messages around it as context and the highlights; a term written in full-text query
//       syntax ('"foo OR bar*"') is taken as plain words, finds the message and never errors.
//
// Progress lines go to stdout as JSON objects; the last line is {"result": ...}.

import { sdk, run, emit, until, register, login, client, started } from "./common.mjs";

const THREADS = { threadSupport: true };
const REACTION = "👍";

// alice and bob, registered; ``alice`` is a client that only sends (never started: no local
// echo, see threadMode), ``bob`` one that is started by the caller.
async function pair(baseUrl, prefix) {
    const stamp = Date.now().toString(36);
    const names = { alice: `${prefix}a${stamp}`, bob: `${prefix}b${stamp}` };
    const alice = client(baseUrl, await register(baseUrl, names.alice));
    const bob = client(baseUrl, await register(baseUrl, names.bob));
    return { alice, bob, names };
}

// alice's public room, joined by bob.
async function sharedRoom(alice, bob, name) {
    const { room_id: roomId } = await alice.createRoom({ name, preset: "public_chat" });
    await bob.joinRoom(roomId);
    return roomId;
}

// A device of bob's started afresh (a new login), with ``options`` for startClient.
async function freshDevice(baseUrl, username, options) {
    const c = client(baseUrl, await login(baseUrl, username));
    await started(c, options);
    return c;
}

function reactionsTo(thread, eventId) {
    const rel = thread?.timelineSet.relations.getChildEventsForEvent(
        eventId,
        "m.annotation",
        "m.reaction",
    );
    return (rel?.getSortedAnnotationsByKey() ?? []).map(([key, events]) => ({
        key,
        senders: [...events].map((e) => e.getSender()).sort(),
    }));
}

// What a client knows of the thread at ``rootId``: null until both replies and the reaction
// to the first one are there.
function threadView(c, roomId, rootId, replies) {
    const thread = c.getRoom(roomId)?.getThread(rootId);
    if (!thread) return null;
    const ids = thread.events.map((e) => e.getId());
    const reactions = reactionsTo(thread, replies[0]);
    if (!replies.every((r) => ids.includes(r)) || reactions.length === 0) return null;
    return {
        length: thread.length,
        events: thread.events.map((e) => ({
            id: e.getId(),
            body: e.getContent().body ?? null,
            thread_root: e.threadRootId ?? null,
        })),
        reactions,
        root_in_thread: ids.includes(rootId),
        participated: thread.hasCurrentUserParticipated,
    };
}

async function threadMode(baseUrl) {
    const { alice, bob, names } = await pair(baseUrl, "th");
    // bob replies from a second device (his phone) while the first one watches. (The SDK's
    // own local echo of a threaded event throws when the server's /sync delivers the event
    // before the /send response does, a race the SDK handles for the main timeline only: the
    // senders here keep no local echo.)
    const phone = client(baseUrl, await login(baseUrl, names.bob));
    await started(bob, THREADS);
    const fresh = [];
    try {
        const roomId = await sharedRoom(alice, bob, "Threads");
        const { event_id: rootId } = await alice.sendTextMessage(roomId, "where shall we eat?");
        await until("the root at bob", () => bob.getRoom(roomId)?.findEventById(rootId));
        // sendMessage with a thread ID: the SDK adds the m.thread relation (with its reply
        // fallback), as Element does.
        const replies = [];
        for (const body of ["the noodle bar", "or the pier"]) {
            const { event_id } = await phone.sendMessage(roomId, rootId, {
                msgtype: "m.text",
                body,
            });
            replies.push(event_id);
        }
        const { event_id: reactionId } = await alice.sendEvent(roomId, rootId, "m.reaction", {
            "m.relates_to": { rel_type: "m.annotation", event_id: replies[0], key: REACTION },
        });
        emit({ step: "thread sent", roomId, rootId, replies, reactionId });

        const live = await until("the thread at bob", () =>
            threadView(bob, roomId, rootId, replies),
        );
        const sentReply = bob.getRoom(roomId).findEventById(replies[1]);
        const relation = sentReply?.getWireContent()["m.relates_to"] ?? null;
        emit({ step: "live", live });

        // Newer messages push the thread out of a new device's initial sync window (4 events;
        // few messages: within the server's default message rate limit).
        for (let i = 0; i < 5; i++) await alice.sendTextMessage(roomId, `later ${i}`);
        const later = await freshDevice(baseUrl, names.bob, { ...THREADS, initialSyncLimit: 4 });
        fresh.push(later);
        const room = await until("the room on bob's new device", () => later.getRoom(roomId));
        const inWindow = room.getLiveTimeline().getEvents().map((e) => e.getId());
        // The thread panel: the room's thread list, then the thread itself.
        await room.createThreadsTimelineSets();
        await room.fetchRoomThreads();
        const listed = room.threadsTimelineSets[0]
            .getLiveTimeline()
            .getEvents()
            .map((e) => e.getId());
        const mine = room.threadsTimelineSets[1]
            .getLiveTimeline()
            .getEvents()
            .map((e) => e.getId());
        const root = room.threadsTimelineSets[0].findEventById(rootId);
        const summary = root?.getServerAggregatedRelation("m.thread") ?? null;
        const scratch = await until("the thread on bob's new device", () =>
            threadView(later, roomId, rootId, replies),
        );
        return {
            ok: true,
            alice: alice.getUserId(),
            root_id: rootId,
            reaction_id: reactionId,
            replies,
            relation,
            live,
            thread_events_in_window: [rootId, ...replies, reactionId].filter((e) =>
                inWindow.includes(e),
            ),
            listed,
            mine,
            summary: summary && {
                count: summary.count,
                latest_event: summary.latest_event?.event_id ?? null,
                current_user_participated: summary.current_user_participated,
            },
            scratch,
        };
    } finally {
        for (const c of [bob, ...fresh]) c.stopClient();
    }
}

// What a client shows of the event ``eventId``: its body (the replacement's, once replaced).
function shown(c, roomId, eventId) {
    const ev = c.getRoom(roomId)?.findEventById(eventId);
    if (!ev) return null;
    return {
        body: ev.getContent().body,
        replaced_by: ev.replacingEventId() ?? null,
        replacing_event: ev.replacingEvent()?.getId() ?? null,
        bundled_replace: ev.getServerAggregatedRelation("m.replace")?.event_id ?? null,
        original_body: ev.getOriginalContent().body,
    };
}

async function editMode(baseUrl) {
    const { alice, bob, names } = await pair(baseUrl, "ed");
    await started(bob);
    const fresh = [];
    try {
        const roomId = await sharedRoom(alice, bob, "Edits");
        const edit = (eventId, fallback, newContent) =>
            alice.sendMessage(roomId, {
                msgtype: "m.text",
                body: `* ${fallback}`,
                "m.new_content": newContent,
                "m.relates_to": { rel_type: "m.replace", event_id: eventId },
            });

        const { event_id: textId } = await alice.sendTextMessage(roomId, "lunch at noon");
        await until("the message at bob", () => shown(bob, roomId, textId));
        const { event_id: textEditId } = await edit(textId, "lunch at one", {
            msgtype: "m.text",
            body: "lunch at one",
        });
        const live = await until("the edit at bob", () => {
            const s = shown(bob, roomId, textId);
            return s?.body === "lunch at one" ? s : null;
        });
        emit({ step: "live", live });

        // A file, and the edit of its caption: the edit's own content has no URL.
        const { content_uri: url } = await alice.uploadContent(Buffer.from("q3 figures\n"), {
            name: "report.txt",
            type: "text/plain",
        });
        const file = { msgtype: "m.file", filename: "report.txt", url };
        const { event_id: fileId } = await alice.sendMessage(roomId, { ...file, body: "Q3" });
        const { event_id: fileEditId } = await edit(fileId, "Q3, final", {
            ...file,
            body: "Q3, final",
        });
        await until("the caption edit at bob", () => {
            return shown(bob, roomId, fileId)?.body === "Q3, final";
        });
        emit({ step: "sent", textId, textEditId, fileId, fileEditId });

        // A new device: its initial /sync has the original with its bundled replacement.
        const second = await freshDevice(baseUrl, names.bob, { initialSyncLimit: 20 });
        fresh.push(second);
        const fromSync = await until("the message on bob's new device", () =>
            shown(second, roomId, textId),
        );
        const editInWindow = Boolean(second.getRoom(roomId).findEventById(textEditId));

        // A device syncing only events with a URL: the file, never the edit of its caption.
        const filter = new sdk.Filter(second.getUserId());
        filter.setDefinition({ room: { timeline: { contains_url: true, limit: 20 } } });
        const files = await freshDevice(baseUrl, names.bob, { filter });
        fresh.push(files);
        const fileView = await until("the file on bob's files device", () =>
            shown(files, roomId, fileId),
        );
        const filesWindow = files
            .getRoom(roomId)
            .getLiveTimeline()
            .getEvents()
            .map((e) => e.getId());
        return {
            ok: true,
            text_id: textId,
            text_edit_id: textEditId,
            file_id: fileId,
            file_edit_id: fileEditId,
            live,
            from_sync: fromSync,
            edit_in_window: editInWindow,
            file_view: fileView,
            files_window_has_edit: filesWindow.includes(fileEditId),
            files_window_has_text: filesWindow.includes(textId),
        };
    } finally {
        for (const c of [bob, ...fresh]) c.stopClient();
    }
}

function hit(result) {
    const ctx = result.context;
    return {
        rank: result.rank,
        event_id: ctx.getEvent().getId(),
        room_id: ctx.getEvent().getRoomId(),
        body: ctx.getEvent().getContent().body,
        context: ctx.getTimeline().map((e) => e.getContent().body),
    };
}

async function searchMode(baseUrl) {
    const { alice, bob } = await pair(baseUrl, "se");
    await started(bob);
    try {
        const roomId = await sharedRoom(alice, bob, "Search");
        const bodies = ["good morning", "shall we meet at the foo bar or the pier?", "see you"];
        const ids = [];
        for (const body of bodies) ids.push((await alice.sendTextMessage(roomId, body)).event_id);
        await until("the messages at bob", () => bob.getRoom(roomId)?.findEventById(ids[2]));

        const found = await bob.searchRoomEvents({ term: "pier" });
        const syntax = await bob.searchRoomEvents({ term: '"foo OR bar*"' });
        const none = await bob.searchRoomEvents({ term: "submarine" });
        return {
            ok: true,
            room_id: roomId,
            ids,
            found: {
                count: found.count,
                highlights: found.highlights,
                results: found.results.map(hit),
            },
            syntax: {
                count: syntax.count,
                highlights: syntax.highlights,
                results: syntax.results.map(hit),
            },
            none: { count: none.count, results: none.results.length },
        };
    } finally {
        bob.stopClient();
    }
}

await run({
    thread: (baseUrl) => threadMode(baseUrl),
    edit: (baseUrl) => editMode(baseUrl),
    search: (baseUrl) => searchMode(baseUrl),
});
