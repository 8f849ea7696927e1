from __future__ import annotations

import socket

from atomlab.core.doctor import check_python, port_is_free


def test_doctor_json_reports_python_home_extras_and_ports(cli, isolated_home):
    result = cli("doctor", "--json")
    assert result.exit_code == 0, result.stdout
    names = {check["name"] for check in result.json["checks"]}
    assert {"python", "home"} <= names
    assert any(name.startswith("extra:") for name in names)
    assert any(name.startswith("port:") for name in names)
    assert result.json["healthy"] is True
    assert isolated_home.is_dir()


def test_doctor_fails_when_home_is_a_file(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = cli("--home", str(blocker), "doctor", "--json")
    assert result.exit_code == 4
    # The documented error envelope: ok false, the exit code, the report in the details.
    assert result.json["ok"] is False and result.json["exit_code"] == 4
    assert result.json["error"]["type"] == "unavailable"
    assert "home" in result.json["error"]["message"]
    details = result.json["error"]["details"]
    assert details["healthy"] is False
    home = next(check for check in details["checks"] if check["name"] == "home")
    assert home["status"] == "fail"
    plain = cli("--home", str(blocker), "doctor")
    assert plain.exit_code == 4 and plain.stdout == ""
    assert plain.stderr.count("\n") == 1 and "home" in plain.stderr


def test_port_in_use_is_detected():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_is_free("127.0.0.1", port) is False


def test_old_python_fails_the_python_check():
    assert check_python((3, 10, 4)).status == "fail"
    assert check_python((3, 11, 0)).status == "ok"
