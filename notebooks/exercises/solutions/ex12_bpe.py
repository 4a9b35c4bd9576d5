"""Solution: byte-level BPE, applying the merges to one word."""


def bpe(word, ranks):
    """Split word into characters, then repeatedly merge the adjacent pair of lowest rank (every occurrence, left
    to right) until no adjacent pair has a rank. word: a str (byte-level characters, e.g. 'Ġwherefore');
    ranks: {(left, right): rank}. Returns the list of tokens (str)."""
    parts = list(word)
    while len(parts) > 1:
        pairs = [(ranks[pair], i) for i, pair in enumerate(zip(parts, parts[1:], strict=False)) if pair in ranks]
        if not pairs:
            break
        best = min(pairs)[0]
        merged, i = [], 0
        while i < len(parts):
            if i + 1 < len(parts) and ranks.get((parts[i], parts[i + 1])) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts
