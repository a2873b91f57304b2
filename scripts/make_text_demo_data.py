#!/usr/bin/env python3
"""Text preference data for the text demo (scripts/demo_text.sh), in TRL's conversational format
with an explicit prompt: a user asks what an animal says; the chosen answer gives its sound, the
rejected one another animal's. The known rule (the right sound) lets the demo score what the
trained model generates. Writes DIR/train.jsonl, DIR/eval.jsonl (a phrasing of the question that
training never sees) and DIR/prompts.jsonl (one question per animal for `dpo generate --chat`,
with the expected sound)."""
import json
import random
import sys

SOUNDS = {"cow": "moo", "dog": "woof", "cat": "meow", "duck": "quack", "sheep": "baa", "owl": "hoot",
          "pig": "oink", "horse": "neigh", "frog": "ribbit", "lion": "roar", "mouse": "squeak", "bee": "buzz",
          "goat": "bleat", "snake": "hiss", "crow": "caw", "wolf": "howl"}
QUESTIONS = ["What does a {a} say?", "What sound does a {a} make?", "Which noise does the {a} make?",
             "Tell me the sound of a {a}.", "A {a} says what?"]
ANSWERS = ["A {a} says {s}.", "The {a} goes {s}!", "{S}! That is what a {a} says."]


def pair(rng, animal, question):
    right = SOUNDS[animal]
    wrong = rng.choice([s for a, s in SOUNDS.items() if a != animal])
    answer = rng.choice(ANSWERS)
    say = lambda s: answer.format(a=animal, s=s, S=s.capitalize())
    return {"prompt": [{"role": "user", "content": question.format(a=animal)}],
            "chosen": [{"role": "assistant", "content": say(right)}],
            "rejected": [{"role": "assistant", "content": say(wrong)}]}


def main(out, train_pairs=1024, eval_pairs=64):
    rng = random.Random(7)
    animals = sorted(SOUNDS)
    held_out = QUESTIONS[-1]  # questions phrased this way are never trained on
    with open(f"{out}/train.jsonl", "w") as f:
        for _ in range(train_pairs):
            f.write(json.dumps(pair(rng, rng.choice(animals), rng.choice(QUESTIONS[:-1]))) + "\n")
    with open(f"{out}/eval.jsonl", "w") as f:
        for _ in range(eval_pairs):
            f.write(json.dumps(pair(rng, rng.choice(animals), held_out)) + "\n")
    with open(f"{out}/prompts.jsonl", "w") as f:
        for a in animals:
            f.write(json.dumps({"messages": [{"role": "user", "content": QUESTIONS[0].format(a=a)}],
                                "expect": SOUNDS[a]}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:]))
