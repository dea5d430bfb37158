"""`kullm eval`: the KULLM README's evaluation reproduced against a running deployment — the 252 instructions asked
through the queue, the answers scored by an OpenAI-compatible judge (G-Eval), a report beside the published figures,
and paired comparisons between runs. README: "Evaluating a deployment"."""
