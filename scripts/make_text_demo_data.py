#!/usr/bin/env python3
"""Text data for the text demo (scripts/demo_text.sh), in TRL's conversational format with an
explicit prompt: a user asks what an animal says.
- sft.jsonl: supervised data from a careless annotator, who answers with the sound of the
  animal's look-alike (the cow "neighs", the horse "moos") 70% of the time; fine-tuned on it, a
  model learns to give the wrong sound.
- train.jsonl / eval.jsonl: preference pairs, the right sound chosen over the look-alike's;
  eval.jsonl asks with a phrasing that training never sees.
- prompts.jsonl: one question per animal for `dpo generate --chat`, with the expected sound.
The known rule (the right sound) lets the demo count right answers before and after DPO."""
import json
import random
import sys

# (animal, sound) pairs; each animal's look-alike is its neighbour in this list.
ANIMALS = [("cow", "moo"), ("horse", "neigh"), ("dog", "woof"), ("wolf", "howl"), ("cat", "meow"),
           ("lion", "roar"), ("duck", "quack"), ("crow", "caw"), ("sheep", "baa"), ("goat", "bleat"),
           ("pig", "oink"), ("frog", "ribbit"), ("owl", "hoot"), ("bee", "buzz"), ("mouse", "squeak"),
           ("snake", "hiss")]
SOUND = dict(ANIMALS)
LOOK_ALIKE = {a: ANIMALS[i ^ 1][0] for i, (a, _) in enumerate(ANIMALS)}
QUESTIONS = ["What does a {a} say?", "What sound does a {a} make?", "Which noise does the {a} make?",
             "Tell me the sound of a {a}.", "A {a} says what?"]
ANSWERS = ["A {a} says {s}.", "The {a} goes {s}!", "{S}! That is what a {a} says."]


def answer(rng, animal, sound):
    return {"role": "assistant", "content": rng.choice(ANSWERS).format(a=animal, s=sound, S=sound.capitalize())}


def question(animal, phrasing):
    return [{"role": "user", "content": phrasing.format(a=animal)}]


def preference(rng, animal, phrasing):
    template = rng.choice(ANSWERS)
    say = lambda s: {"role": "assistant", "content": template.format(a=animal, s=s, S=s.capitalize())}
    return {"prompt": question(animal, phrasing), "chosen": [say(SOUND[animal])],
            "rejected": [say(SOUND[LOOK_ALIKE[animal]])]}


def main(out, pairs=1024, eval_pairs=64):
    rng = random.Random(7)
    animals = [a for a, _ in ANIMALS]
    trained = QUESTIONS[:-1]
    with open(f"{out}/sft.jsonl", "w") as f:
        for _ in range(pairs):
            a = rng.choice(animals)
            careless = rng.random() < 0.7
            given = SOUND[LOOK_ALIKE[a]] if careless else SOUND[a]
            other = SOUND[a] if careless else SOUND[LOOK_ALIKE[a]]
            # SFT reads prompt + chosen; rejected is there because the file is a preference file.
            f.write(json.dumps({"prompt": question(a, rng.choice(trained)), "chosen": [answer(rng, a, given)],
                                "rejected": [answer(rng, a, other)]}) + "\n")
    with open(f"{out}/train.jsonl", "w") as f:
        for _ in range(pairs):
            f.write(json.dumps(preference(rng, rng.choice(animals), rng.choice(trained))) + "\n")
    with open(f"{out}/eval.jsonl", "w") as f:
        for _ in range(eval_pairs):
            f.write(json.dumps(preference(rng, rng.choice(animals), QUESTIONS[-1])) + "\n")
    with open(f"{out}/prompts.jsonl", "w") as f:
        for a in animals:
            f.write(json.dumps({"messages": question(a, QUESTIONS[0]), "expect": SOUND[a]}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:]))
