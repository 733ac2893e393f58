// Refresh-token rotation through matrix-js-sdk (C-S API "Refreshing access tokens").
// Driven by tests/acceptance/test_refresh_js.py, against a Bastion whose refreshable access
// tokens live a few seconds (access_token_lifetime_ms).
//
//   node refresh.mjs rotation <baseUrl> <lifetimeMs>
//       alice logs in asking for a refresh token (loginRequest with refresh_token: true); her
//       client works until the access token expires, then the server answers M_UNKNOWN_TOKEN
//       with soft_logout (the SDK emits Session.logged_out with it); the client refreshes
//       (MatrixClient.refreshToken, POST /v3/refresh), takes the new access token and goes on
//       (a room, a message, /sync); the old access token and, once the new one has been used,
//       the old refresh token are refused.
//
// Progress lines go to stdout as JSON objects; the last line is {"result": ...}.

import { sdk, run, emit, sleep, PASSWORD, register } from "./common.mjs";

// The outcome of a call: {ok: true} or the Matrix error's status, errcode and soft_logout.
async function outcome(fn) {
    try {
        await fn();
        return { ok: true };
    } catch (e) {
        return {
            ok: false,
            status: e.httpStatus ?? null,
            errcode: e.errcode ?? null,
            soft_logout: e.data?.soft_logout ?? null,
        };
    }
}

async function rotation(baseUrl, lifetimeMs) {
    const username = `ref${Date.now().toString(36)}`;
    await register(baseUrl, username);
    const login = await sdk.createClient({ baseUrl }).loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: username },
        password: PASSWORD,
        refresh_token: true,
    });
    emit({ step: "login", expires_in_ms: login.expires_in_ms });
    const issuedAt = Date.now();
    const client = sdk.createClient({
        baseUrl,
        userId: login.user_id,
        deviceId: login.device_id,
        accessToken: login.access_token,
        refreshToken: login.refresh_token,
    });
    const loggedOut = [];
    client.on(sdk.HttpApiEvent.SessionLoggedOut, (e) =>
        loggedOut.push({ errcode: e.errcode, soft_logout: e.data?.soft_logout ?? null }),
    );
    const before = await outcome(() => client.whoami());

    // Past the access token's lifetime: a soft logout.
    await sleep(Math.max(0, issuedAt + lifetimeMs + 300 - Date.now()));
    const expired = await outcome(() => client.whoami());
    emit({ step: "expired", expired });

    // The client refreshes (the request carries the expired token: /refresh needs none).
    const first = await client.refreshToken(login.refresh_token);
    client.setAccessToken(first.access_token);
    const rotated = first.refresh_token !== login.refresh_token
        && first.access_token !== login.access_token;
    const whoami = await client.whoami();
    const { room_id: roomId } = await client.createRoom({ name: "After a refresh" });
    const { event_id: eventId } = await client.sendTextMessage(roomId, "still here");
    const sync = await client.http.authedRequest(sdk.Method.Get, "/sync", { timeout: "0" });
    const timeline = sync.rooms?.join?.[roomId]?.timeline?.events ?? [];
    const synced = timeline.some((ev) => ev.event_id === eventId);

    // The old access token is gone; the old refresh token too, now that the new pair is used.
    const stale = sdk.createClient({ baseUrl, accessToken: login.access_token });
    const oldAccess = await outcome(() => stale.whoami());
    const oldRefresh = await outcome(() => sdk.createClient({ baseUrl }).refreshToken(login.refresh_token));

    // A second rotation with the current refresh token works, and retires the first one.
    const second = await client.refreshToken(first.refresh_token);
    client.setAccessToken(second.access_token);
    const afterSecond = await outcome(() => client.whoami());
    const firstAgain = await outcome(() => sdk.createClient({ baseUrl }).refreshToken(first.refresh_token));
    return {
        ok: true,
        expires_in_ms: login.expires_in_ms,
        has_refresh_token: typeof login.refresh_token === "string",
        before,
        expired,
        logged_out: loggedOut,
        rotated,
        refreshed_expires_in_ms: first.expires_in_ms,
        whoami: { user_id: whoami.user_id, device_id: whoami.device_id },
        user_id: login.user_id,
        device_id: login.device_id,
        synced,
        old_access: oldAccess,
        old_refresh: oldRefresh,
        after_second: afterSecond,
        first_again: firstAgain,
    };
}

await run({ "rotation": (baseUrl, lifetime) => rotation(baseUrl, Number(lifetime)) });
