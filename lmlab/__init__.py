"""lmlab: the reference implementation behind LLM Lab.

One module per idea, each read top to bottom in its chapter of the book:
``device`` (ch. 1), ``data``/``tokenizer``/``word2vec`` (ch. 2), ``rnn`` (ch. 3),
``attention`` (ch. 4), ``transformer``/``rope``/``moe``/``presets``/``hf`` (ch. 5),
``optim``/``train`` (ch. 6), ``generate``/``speculative`` (ch. 7),
``quantize``/``compress`` (ch. 8), ``scaling`` (ch. 9), ``finetune`` (ch. 10);
``checks`` grades the exercises (``grading`` holds its nbgrader preprocessors),
``widgets`` and ``viz`` draw the explorers and figures, ``cli`` is the ``lmlab`` command.
"""

__version__ = "0.1.0"
