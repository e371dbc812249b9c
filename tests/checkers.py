"""Plain-Python checkers shared by the grammar and stream tests (independent of vitwarm's generators)."""


def is_dyck_word(sequence, k):
    """Properly nested and balanced: every closer matches the most recent unclosed opener."""
    open_stack = []
    for token in sequence:
        if token < k:
            open_stack.append(token)
        elif not open_stack or open_stack.pop() != token - k:
            return False
    return not open_stack
