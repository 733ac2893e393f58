"""The guard (issue 9): login defence, rate limits, behavioural detectors, the content
classifier, policy lists, automated actions and alerts.

Pure parts (no clock, no database, no network): :mod:`.signals` (the vocabulary),
:mod:`.tables` and the ``parse_*`` functions of each part (its TOML table), :mod:`.limits`,
:mod:`.login_policy`, :mod:`.confusables`, :mod:`.detectors`, :mod:`.classifier`,
:mod:`.policy_lists`. Shell: :mod:`.service` (``hs.guard``, the one entry point the rest of the
server calls), :mod:`.decisions` (carrying out and recording verdicts), :mod:`.rate_limiter`,
:mod:`.login_defence`, :mod:`.behaviour`, :mod:`.room_cooling`, :mod:`.content`,
:mod:`.policy_service`, :mod:`.alerts`.
"""
