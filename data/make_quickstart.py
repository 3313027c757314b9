"""Generate the quickstart data set (deterministic): an internal IT help desk with in-house codenames.

Why this domain: employees ask about internal systems by their codenames ("falcon keeps dropping"),
while the help-desk articles use the official product description ("the VPN client"). A general
model such as all-MiniLM-L6-v2 matches the *issue* (password reset, slow, locked account) but cannot
tell which *system* a codename means, so it ranks the right article among 15 look-alikes by chance.
Fine-tuning on tickets about some (system, issue) articles teaches the codename -> system mapping,
which the held-out queries test on articles never seen in training (split by query AND by article).

Writes, next to this script (all files byte-identical on every run):
  quickstart/train.jsonl              query/positive pairs (+ "source": ticket channel)
  quickstart/heldout/                 BEIR folder: corpus.jsonl (every article), queries.jsonl,
                                      qrels/dev.tsv and qrels/test.tsv (held-out articles only)
  quickstart/general/                 BEIR folder: a small general-knowledge set with one look-alike
                                      document per question (out-of-domain check)
  quickstart/general_sts.jsonl        graded pairs over the same questions (out-of-domain check whose
                                      Spearman correlation can move)
  quickstart/corpus.jsonl             the article corpus again, for `textcl index build`

Usage: python data/make_quickstart.py [--out data/quickstart]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 13
# codename -> (official description used in the articles, one distinguishing detail)
SYSTEMS = {
    "falcon": ("the VPN client", "remote access to the office network"),
    "harbor": ("the expense reimbursement portal", "submitting receipts and travel costs"),
    "beacon": ("the HR self-service site", "payslips, leave requests and tax forms"),
    "quill": ("the electronic signature service", "signing contracts and NDAs"),
    "atlas": ("the internal wiki", "team pages and engineering documentation"),
    "ledger": ("the timesheet application", "logging billable hours per project"),
    "sentry": ("the door badge system", "entering the buildings and the car park"),
    "nimbus": ("the shared network drive", "storing and sharing department files"),
    "relay": ("the team chat app", "channels, direct messages and huddles"),
    "forge": ("the continuous integration build server", "compiling and testing code on every commit"),
    "orbit": ("the laptop device management agent", "encryption, patches and remote wipe"),
    "pulse": ("the IT ticketing portal", "opening and tracking support requests"),
    "vault": ("the company password manager", "storing shared credentials"),
    "prism": ("the sales analytics dashboards", "weekly revenue and pipeline reports"),
    "anchor": ("the office printing service", "printers, scanning and print quotas"),
    "compass": ("the travel booking tool", "booking flights, trains and hotels"),
}

# issue -> (article title template, article body template, query templates)
ISSUES = {
    "password": (
        "Resetting your password for {name}",
        "If you forgot the password for {name}, open the self-service reset page, confirm the code "
        "sent to your phone and choose a new password of at least 12 characters. {name_cap} is used "
        "for {detail}.",
        ["forgot my {code} password", "how do i reset the {code} password", "{code} password reset",
         "need a new password for {code}", "{code} says my password expired", "change password {code}"]),
    "access": (
        "Requesting access to {name}",
        "New starters do not get {name} automatically. Ask your manager to approve an access request; "
        "access is granted within one working day. {name_cap} covers {detail}.",
        ["how do i get access to {code}", "request {code} account", "{code} access for new hire",
         "my manager needs to approve {code} access?", "can't see {code}, need permission",
         "who grants {code} rights"]),
    "install": (
        "Installing and setting up {name}",
        "Install {name} from the company software center, sign in with your work account and accept "
        "the security prompt. After setup you can use it for {detail}.",
        ["install {code} on my laptop", "how to set up {code}", "where do i download {code}",
         "{code} setup guide", "first time configuring {code}", "{code} installer missing"]),
    "error": (
        "Fixing sign-in errors in {name}",
        "When {name} shows an authentication error, clear the saved session, check that your clock "
        "is correct and sign in again with single sign-on. {name_cap} handles {detail}.",
        ["{code} login error", "{code} won't let me sign in", "authentication failed in {code}",
         "{code} keeps rejecting my login", "sso error when opening {code}", "cannot log into {code}"]),
    "slow": (
        "{name_cap} is slow or not responding",
        "If {name} is slow, check the status page for incidents, close other heavy applications and "
        "restart it. Persistent slowness of {name} ({detail}) should be reported with a timestamp.",
        ["{code} is really slow today", "{code} not responding", "{code} keeps freezing",
         "why is {code} so laggy", "{code} takes forever to load", "{code} hangs"]),
    "mobile": (
        "Using {name} on your phone",
        "{name_cap} has a mobile app for iOS and Android. Enrol your phone in the company profile first, "
        "then sign in; the app supports {detail}.",
        ["{code} on my phone", "is there a {code} mobile app", "{code} android app",
         "use {code} from iphone", "{code} app on mobile not working", "mobile access to {code}"]),
    "locked": (
        "Unlocking a locked {name} account",
        "After five failed attempts {name} locks your account for 30 minutes. Wait, or ask the help "
        "desk to unlock it sooner. Locked accounts block {detail}.",
        ["{code} account locked", "locked out of {code}", "{code} says too many attempts",
         "unlock my {code} account", "{code} blocked me after wrong password", "{code} lockout"]),
    "export": (
        "Exporting your data from {name}",
        "To export data from {name}, open settings, choose export and pick CSV or PDF. Exports include "
        "everything related to {detail}.",
        ["export data from {code}", "download my {code} history as csv", "{code} export to pdf",
         "get a report out of {code}", "how to back up my {code} data", "{code} export button"]),
    "notify": (
        "Managing notifications from {name}",
        "{name_cap} sends e-mail and push notifications. Adjust them under profile, notifications; "
        "you can mute everything except alerts about {detail}.",
        ["too many {code} emails", "turn off {code} notifications", "stop {code} alerts",
         "{code} notification settings", "mute {code}", "{code} keeps pinging me"]),
    "leaver": (
        "What happens to {name} when someone leaves",
        "When an employee leaves, {name} access is removed on the last working day and their items are "
        "transferred to the manager. This covers {detail}.",
        ["{code} access for someone leaving", "transfer {code} stuff from a leaver",
         "remove {code} account of ex employee", "offboarding {code}", "colleague left, their {code} files",
         "{code} for departing staff"]),
}
SOURCES = ("email", "chat", "portal")
N_HELDOUT_ISSUES = 3  # per system: articles whose queries are held out (never trained on)

# Out-of-domain check: general questions MiniLM already handles; fine-tuning should not break them.
GENERAL = [
    ("how long should you boil an egg", "Boiled eggs", "A soft-boiled egg needs about six minutes in boiling water; a hard-boiled egg about ten."),
    ("why is the sky blue", "Rayleigh scattering", "Sunlight is scattered by air molecules, and shorter blue wavelengths scatter the most, so the sky looks blue."),
    ("what causes ocean tides", "Tides", "Tides are caused by the gravitational pull of the moon and the sun on the oceans."),
    ("how many legs does a spider have", "Spiders", "Spiders are arachnids with eight legs and two main body parts."),
    ("best way to store fresh basil", "Storing herbs", "Keep basil stems in a glass of water at room temperature, like cut flowers, rather than in the fridge."),
    ("what is the capital of australia", "Canberra", "Canberra, not Sydney, is the capital city of Australia."),
    ("how do vaccines work", "Vaccination", "Vaccines train the immune system to recognise a pathogen so it can respond quickly to a real infection."),
    ("why do leaves change color in autumn", "Autumn leaves", "As chlorophyll breaks down in autumn, yellow and orange pigments in the leaves become visible."),
    ("how to remove a red wine stain", "Wine stains", "Blot the stain, cover it with salt or baking soda, then wash with cold water and detergent."),
    ("what does a bee make", "Honey bees", "Honey bees collect nectar from flowers and turn it into honey stored in the hive."),
    ("how far is the moon from earth", "The Moon", "The Moon orbits Earth at an average distance of about 384,000 kilometres."),
    ("how to train a puppy to sit", "Puppy training", "Hold a treat above the puppy's nose and move it back; reward the moment it sits."),
    ("what is photosynthesis", "Photosynthesis", "Plants use sunlight, water and carbon dioxide to make sugar and release oxygen."),
    ("when did the first person walk on the moon", "Apollo 11", "Neil Armstrong walked on the Moon in July 1969 during the Apollo 11 mission."),
    ("how much water should i drink a day", "Hydration", "Many adults need roughly two litres of fluid per day, more in hot weather or during exercise."),
    ("why do cats purr", "Cat behaviour", "Cats purr when content, but also to soothe themselves when stressed or injured."),
    ("how does a rainbow form", "Rainbows", "Rainbows appear when sunlight is refracted, reflected and dispersed inside raindrops."),
    ("what is the tallest mountain in the world", "Mount Everest", "Mount Everest in the Himalayas rises 8,849 metres above sea level."),
    ("how to keep bread from going stale", "Bread storage", "Store bread in a cloth bag at room temperature, or freeze slices you will not eat soon."),
    ("what language is spoken in brazil", "Brazil", "Portuguese is the official and most widely spoken language in Brazil."),
    ("how do airplanes stay in the air", "Flight", "Wings are shaped so that moving air creates lift greater than the plane's weight."),
    ("why should you stretch before running", "Warming up", "A warm-up with dynamic stretches raises muscle temperature and lowers injury risk."),
    ("what is the boiling point of water", "Boiling point", "At sea level, water boils at 100 degrees Celsius or 212 degrees Fahrenheit."),
    ("how to grow tomatoes in pots", "Container tomatoes", "Use a large pot, full sun, regular watering and a stake to support the tomato plant."),
    ("what do pandas eat", "Giant pandas", "Giant pandas eat almost only bamboo, up to 12 kilograms a day."),
    ("how does a compass work", "Compasses", "A magnetised needle aligns with Earth's magnetic field and points towards magnetic north."),
    ("who painted the mona lisa", "Mona Lisa", "Leonardo da Vinci painted the Mona Lisa in the early sixteenth century."),
    ("how to fall asleep faster", "Sleep tips", "Keep a regular bedtime, avoid screens before bed and keep the bedroom cool and dark."),
    ("why is the ocean salty", "Sea salt", "Rivers carry dissolved minerals from rocks into the sea, where salt accumulates as water evaporates."),
    ("what is the largest planet", "Jupiter", "Jupiter is the largest planet in the solar system, a gas giant more than eleven times Earth's width."),
]

# One look-alike per general question: same words, wrong answer. Without them every query finds its
# answer first (nDCG@10 = 1.0 before and after), and the forgetting check could never show a drop.
GENERAL_DISTRACTORS = [
    ("Egg allergy", "An egg allergy is a reaction to proteins in egg white or yolk; boiling does not remove them."),
    ("Blue whales", "The blue whale is the largest animal known; its blue-grey skin looks bright blue under water."),
    ("Ocean currents", "Ocean currents are driven by wind, water density and the rotation of the Earth."),
    ("Spider webs", "Spiders spin webs from silk made in glands called spinnerets to catch flying insects."),
    ("Basil pesto", "Pesto is made by crushing fresh basil with garlic, pine nuts, parmesan and olive oil."),
    ("Sydney", "Sydney is the largest city in Australia and home to its famous opera house."),
    ("Antibiotics", "Antibiotics kill bacteria or stop them growing; they do not work against viruses."),
    ("Evergreen trees", "Evergreen trees keep their green needles through autumn and winter."),
    ("Red wine", "Red wine gets its colour from grape skins left in the juice while it ferments."),
    ("Wasps", "Unlike bees, most wasps do not make honey; they hunt insects to feed their young."),
    ("Moon phases", "The Moon seems to change shape as we see more or less of its sunlit half during a month."),
    ("Puppy food", "Puppies need food with more protein and calories than adult dogs while they grow."),
    ("Plant cells", "Plant cells have a rigid cell wall and chloroplasts, which animal cells lack."),
    ("Mars rovers", "Robotic rovers have driven on Mars since 1997, studying its rocks and climate."),
    ("Sparkling water", "Sparkling water is water with dissolved carbon dioxide, which forms the bubbles."),
    ("Lions", "Lions are the only cats that live in groups, called prides, and they roar rather than purr."),
    ("Lightning", "Lightning is a sudden electrostatic discharge between clouds or between a cloud and the ground."),
    ("Mountain climbing", "Climbers above 8,000 metres often carry oxygen because the air is so thin."),
    ("Sourdough", "Sourdough bread rises with wild yeast and lactic acid bacteria instead of baker's yeast."),
    ("Spanish in South America", "Spanish is the main language in most South American countries."),
    ("Hot air balloons", "A hot air balloon rises because heated air inside it is lighter than the cooler air outside."),
    ("Running shoes", "Running shoes should be replaced after roughly 500 to 800 kilometres of use."),
    ("Freezing point", "Fresh water freezes at 0 degrees Celsius; salt water freezes at a lower temperature."),
    ("Potato plants", "Potatoes grow underground from seed potatoes planted in loose, well-drained soil."),
    ("Red pandas", "Red pandas are small tree-dwelling mammals that eat bamboo, fruit and insects."),
    ("GPS", "GPS receivers work out their position from the timing of signals from several satellites."),
    ("The Last Supper", "Leonardo da Vinci's mural The Last Supper is in a convent in Milan."),
    ("Insomnia", "Insomnia is trouble falling or staying asleep on most nights for months."),
    ("Dead Sea", "The Dead Sea is so salty that swimmers float easily on its surface."),
    ("Saturn", "Saturn, the second largest planet, is famous for its bright rings of ice and rock."),
]
assert len(GENERAL_DISTRACTORS) == 30


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def articles() -> dict[str, dict]:
    """One article per (system, issue): id -> {title, text, code, issue}."""
    out = {}
    for code, (name, detail) in SYSTEMS.items():
        for issue, (title, body, _) in ISSUES.items():
            fill = {"name": name, "name_cap": _cap(name), "detail": detail}
            out[f"{code}-{issue}"] = {"title": _cap(title.format(**fill)), "text": body.format(**fill),
                                      "code": code, "issue": issue}
    return out


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")


def _write_qrels(path: Path, pairs: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, d in pairs]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")


def _queries_for(code: str, issue: str, rng: random.Random) -> list[str]:
    texts = [t.format(code=code) for t in ISSUES[issue][2]]
    rng.shuffle(texts)
    # Real tickets capitalise codenames about half of the time.
    return [t.replace(code, _cap(code)) if rng.random() < 0.5 else t for t in texts]


def build(out: Path) -> dict[str, int]:
    rng = random.Random(SEED)
    docs = articles()
    issues = list(ISSUES)
    corpus = [{"_id": i, "title": d["title"], "text": d["text"]} for i, d in docs.items()]
    train, queries, dev, test = [], [], [], []
    for s, code in enumerate(SYSTEMS):
        # Rotate the held-out issues so every issue is held out for some systems and trained for others.
        held = {issues[(s * N_HELDOUT_ISSUES + j) % len(issues)] for j in range(N_HELDOUT_ISSUES)}
        for issue in issues:
            doc_id = f"{code}-{issue}"
            texts = _queries_for(code, issue, rng)
            if issue in held:
                for j, text in enumerate(texts[:3]):
                    qid = f"q-{doc_id}-{j}"
                    queries.append({"_id": qid, "text": text})
                    (dev if j == 0 else test).append((qid, doc_id))
            else:
                pos = docs[doc_id]
                for text in texts[:4]:
                    train.append({"query": text, "positive": (pos["title"] + " " + pos["text"]).strip(),
                                  "positive_id": doc_id, "source": rng.choice(SOURCES)})
    rng.shuffle(train)
    _write_jsonl(out / "train.jsonl", train)
    _write_jsonl(out / "corpus.jsonl", corpus)
    _write_jsonl(out / "heldout" / "corpus.jsonl", corpus)
    _write_jsonl(out / "heldout" / "queries.jsonl", queries)
    _write_qrels(out / "heldout" / "qrels" / "dev.tsv", dev)
    _write_qrels(out / "heldout" / "qrels" / "test.tsv", test)
    general_corpus = [{"_id": f"g{i}", "title": t, "text": x} for i, (_, t, x) in enumerate(GENERAL)]
    general_corpus += [{"_id": f"gx{i}", "title": t, "text": x} for i, (t, x) in enumerate(GENERAL_DISTRACTORS)]
    general_queries = [{"_id": f"gq{i}", "text": q} for i, (q, _, _) in enumerate(GENERAL)]
    _write_jsonl(out / "general" / "corpus.jsonl", general_corpus)
    _write_jsonl(out / "general" / "queries.jsonl", general_queries)
    _write_qrels(out / "general" / "qrels" / "test.tsv", [(f"gq{i}", f"g{i}") for i in range(len(GENERAL))])
    _write_qrels(out / "general" / "qrels" / "dev.tsv", [(f"gq{i}", f"g{i}") for i in range(len(GENERAL))])
    # Graded pairs over the same questions (answer 4, look-alike 1.5, another question's answer 0): a
    # Spearman correlation never saturates, so forgetting shows as a drop of a few points.
    n = len(GENERAL)
    sts = [row for i, (q, t, x) in enumerate(GENERAL) for row in (
        {"sentence1": q, "sentence2": f"{t}. {x}", "score": 4.0},
        {"sentence1": q, "sentence2": ". ".join(GENERAL_DISTRACTORS[i]), "score": 1.5},
        {"sentence1": q, "sentence2": f"{GENERAL[(i + 7) % n][1]}. {GENERAL[(i + 7) % n][2]}", "score": 0.0})]
    _write_jsonl(out / "general_sts.jsonl", sts)
    return {"train": len(train), "corpus": len(corpus), "dev": len(dev), "test": len(test),
            "general": len(GENERAL), "general_corpus": len(general_corpus)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "quickstart"))
    args = parser.parse_args()
    counts = build(Path(args.out))
    print(f"wrote {args.out}: {counts}")


if __name__ == "__main__":
    main()
