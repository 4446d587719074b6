"""segdeck's terminal app (Textual): ``segdeck`` / ``segdeck tui [FOLDER]``.

Layout: ``app.py`` (thin App), ``screens/`` (main, help; tool screens such as a
cluster-threshold picker plug in through the job class's ``tui_tool_screen``), ``controllers/``
(the main screen's non-visual parts: jobs, threshold curve, annotate, model picker;
they talk to the screen by messages), ``widgets/``
(folder tree, parameter form, job list, log), ``jobwatch.py`` and ``launch.py`` (no
Textual: following job folders, starting processes), styles in ``*.tcss``.
"""
