#!/usr/bin/env python3
"""A reproducible mix of normal conversations and spam, sent to a live colloquy, then scored.

Each simulated client has its own IP (sent as X-Forwarded-For, so the server must trust the
local peer: TRUSTED_PROXIES=127.0.0.1). After the run it reads the team's
/api/conversations/suspicious and /api/conversations/blocks and reports, per IP:
precision and recall of the flags, and whether any legitimate visitor was blocked.

Usage: BASE_URL=http://127.0.0.1:8080 ADMIN_TOKEN=... spam_corpus.py [--seed N] [--markdown]

RATE_LIMIT_NODES=N (default 1): BASE_URL is a round-robin balancer over N nodes whose rate
budgets still count per node; the team then gets 1/N of the per-visitor and per-IP message
budgets on each node, so the cluster refuses (and the detector sees refusals) where one node
would.
"""
import argparse
import json
import os
import random
import sys
import time
import urllib.error
import urllib.request

BASE = os.environ.get("BASE_URL", "http://127.0.0.1:8080").rstrip("/")
ADMIN = os.environ.get("ADMIN_TOKEN", "")
NODES = int(os.environ.get("RATE_LIMIT_NODES", "1"))


def call(method, path, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, json.loads(res.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


PRODUCTS = ["blue kettle", "running shoes", "desk lamp", "yoga mat", "phone case", "coffee grinder",
            "backpack", "wool scarf", "garden hose", "bike light"]
OPENERS = ["Hi", "Hello", "Hey there", "Good morning", "Hi team", "Hello support"]
PROBLEMS = ["my order {n} has not arrived yet", "the {p} I bought is broken", "I was charged twice for order {n}",
            "can I return the {p}?", "how do I change my delivery address for order {n}",
            "the {p} arrived in the wrong colour", "is the {p} back in stock soon?"]
FOLLOWUPS = ["It was ordered on {d}.", "Thanks for looking into it.", "Order number is {n}.",
             "Here is the tracking page: https://shop.example.com/track/{n}", "Any update?",
             "I can send a photo if that helps.", "Great, thank you!", "My email is on the order."]
SPAM = ["CHEAP meds no prescription {u} {u} {u}", "Make $5000 a week from home!!! {u} {u} {u}",
        "Best casino bonus {u} {u} {u} {u}", "Crypto giveaway, double your coins {u} {u} {u}"]


def url(rng):
    return "https://%s.%s/%d" % (rng.choice(["cheap", "win", "bonus", "deal"]), rng.choice(["test", "example"]), rng.randint(1, 999))


class Client:
    def __init__(self, token, ip):
        self.token, self.ip = token, ip

    def post(self, body):
        return call("POST", "/api/conversations/widget/message", body,
                    {"X-Conversations-Token": self.token, "X-Forwarded-For": self.ip})


def legit(rng, token, ip, distinct_id):
    c = Client(token, ip)
    for _ in range(rng.randint(1, 2)):
        n = rng.randint(10000, 99999)
        p = rng.choice(PRODUCTS)
        first = "%s, %s" % (rng.choice(OPENERS), rng.choice(PROBLEMS).format(n=n, p=p))
        status, res = c.post({"distinct_id": distinct_id, "message": first, "traits": {"email": distinct_id}})
        if status != 201:
            return status
        for _ in range(rng.randint(1, 5)):
            text = rng.choice(FOLLOWUPS).format(n=n, d="Monday")
            c.post({"distinct_id": distinct_id, "ticket_id": res["ticket_id"], "message": text})
    return 201


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    limits = {"message_team_per_hour": 1000000}
    if NODES > 1:  # the one-node defaults (10 and 100 per minute) split over the nodes
        limits.update(message_distinct_id_per_minute=10 // NODES, message_ip_per_minute=100 // NODES)
    status, team = call("POST", "/api/teams",
                        {"name": "spam-corpus-%d" % args.seed, "rate_limits": limits},
                        {"Authorization": "Bearer " + ADMIN})
    if status != 201:
        sys.exit("could not create a team: %s %s" % (status, team))
    token, secret = team["public_token"], team["secret_api_key"]

    legit_ips, spam_ips = set(), {}
    # Normal visitors, each on their own address, plus an office of six behind one NAT.
    for i in range(80):
        ip = "10.1.%d.%d" % (i // 200, i % 200 + 1)
        legit_ips.add(ip)
        legit(rng, token, ip, "customer%d.%d@example.com" % (i, rng.randint(1, 9999)))
    for i in range(6):
        legit_ips.add("10.9.9.9")
        legit(rng, token, "10.9.9.9", "office%d@corp.example" % i)

    def spam_ip(kind, i):
        ip = "172.16.%d.%d" % (len(spam_ips) // 200, len(spam_ips) % 200 + 1)
        spam_ips[ip] = kind
        return ip

    for i in range(10):  # floods: the same text again and again
        ip = spam_ip("flood", i)
        c = Client(token, ip)
        text = "HELLO ANYONE THERE %d" % rng.randint(1, 9999)
        for _ in range(15):
            c.post({"distinct_id": "flooder%d@x.test" % i, "message": text})
    for i in range(10):  # link spam
        ip = spam_ip("links", i)
        c = Client(token, ip)
        for _ in range(3):
            c.post({"distinct_id": "linker%d@x.test" % i,
                    "message": rng.choice(SPAM).format(u=url(rng))})
    for i in range(5):  # enumeration sweeps: many guessed visitor ids from one address
        ip = spam_ip("enumeration", i)
        c = Client(token, ip)
        for k in range(25):
            c.post({"distinct_id": "guess%d-%d@x.test" % (i, k), "message": "hello"})
    for i in range(10):  # honeypot bots
        ip = spam_ip("honeypot", i)
        c = Client(token, ip)
        for _ in range(2):
            c.post({"distinct_id": "bot%d@x.test" % i, "message": "Nice site", "_hp": "http://bot.test"})
    for i in range(5):  # short sweeps: just over the enumeration rule's 10 ids (no rng: the
        ip = spam_ip("short sweep", i)  # patterns above draw the same numbers as before)
        c = Client(token, ip)
        for k in range(12):
            c.post({"distinct_id": "probe%d-%d@x.test" % (i, k), "message": "hello"})

    time.sleep(3)  # the detector writes in batches; blocks reach the list within 2 s
    auth = {"Authorization": "Bearer " + secret}
    _, sus = call("GET", "/api/conversations/suspicious", None, auth)
    _, blocks = call("GET", "/api/conversations/blocks", None, auth)
    flagged = {r["ip"] for r in sus["results"] if r.get("ip")}
    blocked = {b["ip"] for b in blocks["results"] if b.get("ip")}
    spam = set(spam_ips)
    tp = len(flagged & spam)
    precision = tp / len(flagged) if flagged else 1.0
    recall = tp / len(spam)
    legit_blocked = sorted(blocked & legit_ips)
    per_kind = {}
    for ip, kind in spam_ips.items():
        k = per_kind.setdefault(kind, [0, 0, 0])
        k[0] += 1
        k[1] += ip in flagged
        k[2] += ip in blocked
    false_pos = sorted(flagged - spam)

    lines = ["| pattern | clients | flagged | blocked |", "|---|---|---|---|"]
    for kind, (n, f, b) in per_kind.items():
        lines.append("| %s | %d | %d | %d |" % (kind, n, f, b))
    lines.append("| legitimate (%d IPs, %d visitors) | %d | %d | %d |" % (
        len(legit_ips), 86, len(legit_ips), len(flagged & legit_ips), len(legit_blocked)))
    summary = ("precision %.3f, recall %.3f (seed %d; %d spam IPs, %d flagged, %d true); "
               "legitimate IPs blocked: %d" % (precision, recall, args.seed, len(spam), len(flagged), tp,
                                               len(legit_blocked)))
    print("\n".join(lines))
    print()
    print(summary)
    if false_pos:
        print("false positives:", ", ".join(false_pos))
    ok = precision >= 0.95 and recall >= 0.9 and not legit_blocked
    print("targets (precision >= 0.95, recall >= 0.9, no legitimate visitor blocked):", "met" if ok else "NOT met")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
