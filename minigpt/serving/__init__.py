"""``minigpt serve CHECKPOINT``: an OpenAI-compatible HTTP server for a stage output folder, with a web page
to chat with the model and to play tic-tac-toe against it.

Modules, one job each: :mod:`.schemas` (request bodies), :mod:`.api_errors` (OpenAI's error shape),
:mod:`.admission` (one generation at a time, a bounded queue), :mod:`.generation` (prompt, limits, decoding,
streaming), :mod:`.app` (the routes), :mod:`.serve_command` (the CLI). fastapi is imported only by the last
three when a server is built, so the other commands never pay for it.
"""
