import io

from gateway.progress import ProgressLine


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_stream_prints_one_line_per_percent_and_the_end() -> None:
    out = io.StringIO()
    line = ProgressLine(out)
    for done in range(0, 201):
        line(done, 200, "backup")
    lines = out.getvalue().splitlines()
    assert lines[0] == "backup: 0/200 (0%)"
    assert lines[-1] == "backup: 200/200 (100%)"
    assert len(lines) == 101


def test_terminal_rewrites_one_line_and_ends_it() -> None:
    out = Tty()
    line = ProgressLine(out, interval=3600)
    line(1, 10, "rotate")
    line(2, 10, "rotate")  # within the interval: not drawn
    line(10, 10, "rotate")
    text = out.getvalue()
    assert text.count("\r\x1b[K") == 2
    assert text.endswith("rotate: 10/10 (100%)\n")
    assert "2/10" not in text


def test_close_ends_an_unfinished_line_on_a_terminal() -> None:
    out = Tty()
    line = ProgressLine(out)
    line(3, 10, "import")
    line.close()
    assert out.getvalue().endswith("(30%)\n")


def test_unknown_total_counts_up() -> None:
    out = io.StringIO()
    ProgressLine(out)(1234, 0, "retention")
    assert out.getvalue() == "retention: 1,234\n"
