"""The admin's steps per variant: in order, in both languages and both parts, commands that parse.

Each variant's block is rendered from a report built directly (5.7.193's ``microsoft365_group``
included), and checked for the steps of Microsoft's articles in the order they must be done
(for the allowed-senders list, clearing the authentication requirement comes before the list),
the one consistent statement to the sender, and PowerShell lines that are single statements
with quoted arguments (``tests.powershell_tokens``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from gateway.explain import render
from gateway.explain.commands import is_plain_address
from tests.advice_reports import VARIANTS, flat_html, flat_text, rendered, report
from tests.powershell_tokens import NotOneStatement, command_lines, html_command_lines, literals, tokenize

ADDRESS = "team@contoso.example"
ID = f"-Identity '{ADDRESS}'"
CLEAR = "-RequireSenderAuthenticationEnabled $false"
LIST = "-AcceptMessagesOnlyFromSendersOrMembers @{Add='taro.yamada@example.org',"
REQUIRE = '"Require that all senders are authenticated"'
INSIDE_OUTSIDE = '"Senders inside and outside of my organization"'
ANONYMOUS = "-User Anonymous -AccessRights CreateItems"
ADD_SENDER = "-AcceptMessagesOnlyFromSendersOrMembers @{Add='taro.yamada@example.org'}"

#: (variant, language) -> what the block must say, in this order (whitespace collapsed).
ORDER: dict[tuple[str, str], list[str]] = {
    ("mailbox", "en"): [
        "Recipients > Mailboxes",
        "Mailbox features and, under Message Delivery Restrictions, click View details",
        f"clear {REQUIRE}",
        "Click OK, then Save.",
        "In the new Exchange admin center",
        "Mail flow settings, open Message delivery restrictions",
        f"Set-Mailbox {ID} {CLEAR}",
        "Create a mail contact for each of those senders",
        f"first clear {REQUIRE}",
        '"Only senders in the following list"',
        "New-MailContact -Name 'taro.yamada@example.org' -ExternalEmailAddress 'taro.yamada@example.org'",
        f"Set-Mailbox {ID} {CLEAR} {LIST}",
        "up to about an hour to apply. Then ask the sender to send the message again.",
    ],
    ("mailbox", "ja"): [
        "[受信者] > [メールボックス]",
        "[メールボックスの機能] を開き、[メッセージの配信制限] の [詳細の表示] をクリックします。",
        "[すべての送信者に認証を要求する] をオフにします。",
        "[OK] をクリックし、[保存] をクリックします。",
        "新しい Exchange 管理センターの場合",
        "[メール フローの設定] で [メッセージの配信制限] を開きます。",
        f"Set-Mailbox {ID} {CLEAR}",
        "メール連絡先を作成し",
        "まず [すべての送信者に認証を要求する] をオフにします。",
        "次に [次の一覧の送信者のみ] を選び",
        "New-MailContact",
        f"Set-Mailbox {ID} {CLEAR} {LIST}",
        "最大 1 時間ほどかかります。反映後に、送信者の方にもう一度送信するようお伝えください。",
    ],
    ("mail_user", "en"): [
        "Recipients > Contacts, select the mail user",
        "Mail flow settings and, under Message Delivery Restrictions, click View details",
        f"clear {REQUIRE}",
        "Click OK, then Save.",
        f"Set-MailUser {ID} {CLEAR}",
        f"first clear {REQUIRE}",
        '"Only senders in the following list"',
        f"Set-MailUser {ID} {CLEAR} {LIST}",
        "up to about an hour",
    ],
    ("mail_user", "ja"): [
        "[受信者] > [連絡先] を開き、メール ユーザー",
        "[メール フローの設定] を開き、[メッセージの配信制限] の [詳細の表示]",
        "[すべての送信者に認証を要求する] をオフにします。",
        "[OK] をクリックし、[保存]",
        f"Set-MailUser {ID} {CLEAR}",
        "まず [すべての送信者に認証を要求する] をオフ",
        "次に [次の一覧の送信者のみ]",
        f"Set-MailUser {ID} {CLEAR} {LIST}",
        "最大 1 時間ほど",
    ],
    ("group", "en"): [
        "Recipients > Groups, select",
        f"Go to Delivery management and select {INSIDE_OUTSIDE}",
        "Click Save.",
        "Edit delivery management",
        '"Allow messages from people inside and outside my organization"',
        '"Allow external senders to email this group"',
        '"Let people outside the organization email the group"',
        f"Set-DistributionGroup {ID} {CLEAR}",
        f"Set-DynamicDistributionGroup {ID} {CLEAR}",
        f"Set-UnifiedGroup {ID} {CLEAR}",
        f"first select {INSIDE_OUTSIDE}",
        "Then add the contacts and the all-users group to the allowed senders",
        f"Set-DistributionGroup {ID} {CLEAR} {LIST}",
        "up to about an hour",
    ],
    ("group", "ja"): [
        "[受信者] > [グループ] を開き",
        "[配信管理] で [組織内および組織外の送信者] を選びます。",
        "[保存] をクリックします。",
        "Edit delivery management",
        "Allow messages from people inside and outside my organization",
        "Allow external senders to email this group",
        "Let people outside the organization email the group",
        f"Set-DistributionGroup {ID} {CLEAR}",
        f"Set-DynamicDistributionGroup {ID} {CLEAR}",
        f"Set-UnifiedGroup {ID} {CLEAR}",
        "まず [組織内および組織外の送信者] を選びます",
        "次に、作成した連絡先と全員を含むグループを許可する送信者に追加",
        f"Set-DistributionGroup {ID} {CLEAR} {LIST}",
        "最大 1 時間ほど",
    ],
    ("microsoft365_group", "en"): [
        "Recipients > Groups and select",
        'On the Settings tab, select "Allow external senders to email this group"',
        "Click Save.",
        "Microsoft 365 admin center",
        "Teams & groups > Active teams & groups",
        "Outlook on the web",
        "Edit group",
        '"Let people outside the organization email the group"',
        "Connect-ExchangeOnline",
        f"Set-UnifiedGroup {ID} {CLEAR}",
        "adds the sender as a member",
        "up to about an hour",
    ],
    ("microsoft365_group", "ja"): [
        "[受信者] > [グループ] を開き",
        "Allow external senders to email this group",
        "[保存] をクリックします。",
        "Microsoft 365 管理センターの場合",
        "[チームとグループ] > [アクティブなチームとグループ]",
        "Outlook on the web",
        "[グループの編集]",
        "Let people outside the organization email the group",
        "Connect-ExchangeOnline",
        f"Set-UnifiedGroup {ID} {CLEAR}",
        "送信者をメンバーに追加",
        "最大 1 時間ほど",
    ],
    ("public_folder", "en"): [
        "Public folders > Public folders",
        f'Mail flow settings and, under Accept messages from, clear {REQUIRE} and select "All senders"',
        "Click Save.",
        f"Set-MailPublicFolder {ID} {CLEAR}",
        "Folder permissions > Manage, add Anonymous with the permission level Contributor",
        f"Add-PublicFolderClientPermission -Identity '\\<folder path>' {ANONYMOUS}",
        f"first clear {REQUIRE}",
        '"Only senders in the following list"',
        f"Set-MailPublicFolder {ID} {CLEAR} {LIST}",
        "up to about an hour",
    ],
    ("public_folder", "ja"): [
        "[パブリック フォルダー] > [パブリック フォルダー]",
        "[メール フローの設定] で [すべての送信者に認証を要求する] をオフにし、[すべての送信者] を選びます。",
        "[保存] をクリックします。",
        f"Set-MailPublicFolder {ID} {CLEAR}",
        "[フォルダーのアクセス許可] の [管理]",
        "アクセス許可レベル [投稿者]",
        f"Add-PublicFolderClientPermission -Identity '\\<フォルダーのパス>' {ANONYMOUS}",
        "まず [すべての送信者に認証を要求する] をオフ",
        "次に [次の一覧の送信者のみ]",
        f"Set-MailPublicFolder {ID} {CLEAR} {LIST}",
        "最大 1 時間ほど",
    ],
    ("organization", "en"): [
        "First find out what kind of recipient",
        f"Get-Recipient {ID}",
        "Mailbox: Recipients > Mailboxes",
        "Group (distribution, mail-enabled security or dynamic distribution group)",
        "Microsoft 365 group",
        "Mail user: Recipients > Contacts",
        "Public folder: Public folders > Public folders",
        f"Set-Mailbox {ID} {CLEAR}",
        f"Set-DistributionGroup {ID} {CLEAR}",
        f"Set-DynamicDistributionGroup {ID} {CLEAR}",
        f"Set-UnifiedGroup {ID} {CLEAR}",
        f"Set-MailUser {ID} {CLEAR}",
        f"Set-MailPublicFolder {ID} {CLEAR}",
        "first turn off the authentication requirement",
        "Then allow only the listed senders",
        f"Set-Mailbox {ID} {CLEAR} {LIST}",
        "up to about an hour",
    ],
    ("organization", "ja"): [
        "どの種類の受信者かを確認します",
        f"Get-Recipient {ID}",
        "メールボックス: [受信者] > [メールボックス]",
        "グループ (配布グループ、メールが有効なセキュリティ グループ、動的配布グループ)",
        "Microsoft 365 グループ:",
        "メール ユーザー: [受信者] > [連絡先]",
        "パブリック フォルダー: [パブリック フォルダー]",
        f"Set-Mailbox {ID} {CLEAR}",
        f"Set-DistributionGroup {ID} {CLEAR}",
        f"Set-DynamicDistributionGroup {ID} {CLEAR}",
        f"Set-UnifiedGroup {ID} {CLEAR}",
        f"Set-MailUser {ID} {CLEAR}",
        f"Set-MailPublicFolder {ID} {CLEAR}",
        "まず認証の要求をオフにします",
        "次に、一覧の送信者のみを許可する設定",
        f"Set-Mailbox {ID} {CLEAR} {LIST}",
        "最大 1 時間ほど",
    ],
    ("legacy", "en"): [
        "Exchange 2010 or 2007, in the Exchange Management Console",
        "Recipient Configuration",
        "Mail Flow Settings tab, select Message Delivery Restrictions and click Properties",
        f"Clear {REQUIRE}, click OK, then OK again.",
        "Exchange 2013 or later, in the Exchange admin center",
        "View details",
        "Exchange Management Shell",
        f"Get-Recipient {ID}",
        f"Set-Mailbox {ID} {CLEAR}",
        f"Set-DistributionGroup {ID} {CLEAR}",
        f"first clear {REQUIRE}",
        '"Only senders in the following list"',
        "up to about an hour",
    ],
    ("legacy", "ja"): [
        "Exchange 2010 / 2007 の場合 (Exchange 管理コンソール)",
        "[受信者の構成]",
        "[メール フローの設定] (Mail Flow Settings) タブで [メッセージ配信の制限]",
        "[すべての送信者に認証を要求する] をオフにし、[OK] を 2 回クリックします。",
        "Exchange 2013 以降の場合 (Exchange 管理センター)",
        "[詳細の表示]",
        "Exchange 管理シェル",
        f"Get-Recipient {ID}",
        f"Set-Mailbox {ID} {CLEAR}",
        f"Set-DistributionGroup {ID} {CLEAR}",
        "まず [すべての送信者に認証を要求する] をオフ",
        "次に [次の一覧の送信者のみ]",
        "最大 1 時間ほど",
    ],
    ("sender_not_allowed", "en"): [
        "Create a mail contact for the sender",
        "Recipients > Groups, select",
        "Go to Delivery management, click Add (+), select the new contact",
        "Click Save.",
        "Recipients > Contacts > Add a contact > Mail contact",
        "Specified senders",
        "New-MailContact -Name 'taro.yamada@example.org' -ExternalEmailAddress 'taro.yamada@example.org'",
        f"Set-DistributionGroup {ID} {ADD_SENDER}",
        INSIDE_OUTSIDE,
        f"Set-DistributionGroup {ID} -AcceptMessagesOnlyFromSendersOrMembers $null {CLEAR}",
        "up to about an hour",
    ],
    ("sender_not_allowed", "ja"): [
        "送信者のメール連絡先を作成します",
        "[受信者] > [グループ] を開き",
        "[配信管理] で [追加] (+) をクリックし",
        "[保存] をクリックします。",
        "連絡先の追加 (Add a contact)",
        "Specified senders",
        "New-MailContact -Name 'taro.yamada@example.org' -ExternalEmailAddress 'taro.yamada@example.org'",
        f"Set-DistributionGroup {ID} {ADD_SENDER}",
        "[組織内および組織外の送信者]",
        f"Set-DistributionGroup {ID} -AcceptMessagesOnlyFromSendersOrMembers $null {CLEAR}",
        "最大 1 時間ほど",
    ],
}


def assert_in_order(text: str, needles: list[str]) -> None:
    position = 0
    for needle in needles:
        found = text.find(needle, position)
        assert found >= 0, (
            f"{needle!r} missing after position {position} in: ...{text[position : position + 400]}"
        )
        position = found + len(needle)


def test_every_variant_has_its_steps() -> None:
    assert {variant for variant, _ in ORDER} == set(VARIANTS) == {*render.VARIANTS, render.SENDER_NOT_ALLOWED}


@pytest.mark.parametrize("lang", ["en", "ja"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_steps_in_order_in_text_and_html(variant: str, lang: str) -> None:
    block = rendered(report(variant, ADDRESS), lang)
    assert_in_order(flat_text(block.text), ORDER[(variant, lang)])
    assert_in_order(flat_html(block.html), ORDER[(variant, lang)])


@pytest.mark.parametrize("lang", ["en", "ja"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_command_is_one_statement_with_quoted_arguments(variant: str, lang: str) -> None:
    block = rendered(report(variant, ADDRESS), lang)
    text_lines = [line.strip() for line in command_lines(block.text)]
    html_lines = [line.strip() for line in html_command_lines(block.html)]
    assert text_lines, "each variant gives at least one command"
    assert text_lines == html_lines  # the same commands in both parts
    for line in text_lines:
        tokens = tokenize(line)
        kinds = [t.kind for t in tokens]
        # -Identity is always followed by a single-quoted literal.
        for i, token in enumerate(tokens):
            if token.kind == "param" and token.text == "-Identity":
                assert kinds[i + 1] == "literal", line
        # Every literal is the recipient, the sender, or a placeholder: nothing else from the bounce.
        for value in literals(tokens):
            assert value in (ADDRESS, "taro.yamada@example.org") or value.startswith(("<", "\\<")), line


@pytest.mark.parametrize(
    "line",
    [
        'Set-Mailbox -Identity "a"; Remove-Mailbox ceo -Confirm:$false; "b@contoso.example" -X $false',
        "Set-Mailbox -Identity 'a'; Remove-Mailbox ceo",
        "Set-Mailbox -Identity 'a' | Remove-Mailbox",
        "Set-Mailbox -Identity x$(Start-Process calc)@contoso.example",
        "Set-Mailbox -Identity 'a' -X $(calc)",
        "Set-Mailbox -Identity 'a''",
        "Set-Mailbox -Identity 'a\u2019; calc; \u2018b'",
        "Set-Mailbox -Identity 'a' `\n-X $false",
        "Set-Mailbox -Identity 'a' # comment",
        "Set-Mailbox -Identity 'a' -X @{Add=\"b\"}",
        "Set-Mailbox 'a'",
        "& calc",
    ],
)
def test_the_tokenizer_rejects_what_would_not_be_one_statement(line: str) -> None:
    with pytest.raises(NotOneStatement):
        tokenize(line)


def test_the_tokenizer_reads_doubled_quotes_and_hashtables() -> None:
    tokens = tokenize(
        "Set-Thing -Identity 'o''brien@x.example' -A @{Add='a@x.example','<b>'} -B $false -C Anonymous"
    )
    assert literals(tokens) == ["o'brien@x.example", "a@x.example", "<b>"]
    assert [t.kind for t in tokens] == [
        "cmdlet",
        "param",
        "literal",
        "param",
        "hash",
        "param",
        "constant",
        "param",
        "bare",
    ]


@pytest.mark.parametrize("lang", ["en", "ja"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_an_unsafe_address_becomes_a_placeholder_with_the_reason(variant: str, lang: str) -> None:
    evil = 'a"; Remove-Mailbox ceo -Confirm:$false; "b@contoso.example'
    block = rendered(report(variant, evil, sender='"x" <y$(calc)@contoso.example>'), lang)
    recipient_placeholder, sender_placeholder = (
        ("<recipient address>", "<sender address>")
        if lang == "en"
        else ("<受信者のアドレス>", "<送信者のアドレス>")
    )
    why = (
        "is not a plain email address, so it is not copied into the commands"
        if lang == "en"
        else "通常のメール アドレスの形式ではないため、コマンドには含めていません"
    )
    for part, lines in (
        (flat_text(block.text), command_lines(block.text)),
        (flat_html(block.html), html_command_lines(block.html)),
    ):
        assert why in part
        for line in lines:
            values = literals(tokenize(line))
            assert "Remove-Mailbox" not in line and "$(" not in line and "calc" not in line
            if "-Identity" in line and "PublicFolderClientPermission" not in line:
                assert recipient_placeholder in values
            if "-ExternalEmailAddress" in line or "@{Add=" in line:
                assert sender_placeholder in values


def test_an_address_with_an_apostrophe_is_doubled_inside_the_literal() -> None:
    block = rendered(report("mailbox", "o'brien@contoso.example"), "en")
    assert (
        "Set-Mailbox -Identity 'o''brien@contoso.example' -RequireSenderAuthenticationEnabled $false"
        in block.text
    )
    assert literals(tokenize(command_lines(block.text)[0])) == ["o'brien@contoso.example"]


@pytest.mark.parametrize("lang", ["en", "ja"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_one_consistent_statement_to_the_sender(variant: str, lang: str) -> None:
    text = flat_text(rendered(report(variant), lang).text)
    group_like = variant in ("group", "microsoft365_group", "sender_not_allowed")
    if lang == "en":
        assert "Sending again will not help" in text and "not an SPF or DKIM problem" in text
        assert (
            "contact the recipient another way" in text
            and "forward this whole message to their IT administrator" in text
        )
        assert ("(for a group, also the group's owner)" in text) is group_like
        assert text.count("can change this setting") == 1
        assert "can also change" not in text
    else:
        assert "再送信しても届きません" in text and "SPF や DKIM" in text
        assert (
            "別の方法で宛先の方にご連絡いただき" in text and "IT 管理者に転送するようご依頼ください" in text
        )
        assert ("(グループの場合はグループの所有者も)" in text) is group_like
        assert text.count("変更できるのは") == 1
        # Business register: no 「あなた」, the sender's message is 「お送りいただいたメッセージ」.
        assert "あなた" not in text
        assert "お送りいただいたメッセージ" in text


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_no_line_starts_with_the_boundary_prefix(variant: str) -> None:
    """RFC 2046 section 5.1.1: "--" + boundary may not begin a line; headings no longer start with a value."""
    block = rendered(
        report(
            variant,
            "--rep-b1@contoso.example",
            sender="--rep-b1@contoso.example",
            subject="--rep-b1--",
            date="--x",
        )
    )
    assert is_plain_address("--rep-b1@contoso.example")  # so it does reach the commands, inside quotes
    for part in (block.text, block.html):
        starts = [line for line in part.split("\n") if line.startswith("--")]
        assert starts == []
    assert "管理者向けの手順 (宛先: --rep-b1@contoso.example)" in block.text


def test_an_override_template_cannot_start_a_line_with_the_boundary_prefix(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "block.txt.j2").write_text(
        "{{ recipients[0].address }}\n--{{ subject }}\n", encoding="utf-8"
    )
    block = rendered(report("mailbox", "--x@contoso.example"), "en", template_dir=tmp_path)
    lines = block.text.split("\n")
    assert " --x@contoso.example" in lines and " --Quarterly report" in lines
    assert not any(line.startswith("--") for line in lines)


def test_japanese_text_stays_in_jis_x_0208() -> None:
    """ISO-2022-JP parts keep their charset: the Japanese wording must be encodable in it."""
    for variant in VARIANTS:
        block = rendered(report(variant), "ja")
        block.text.encode("iso-2022-jp")
        block.html.encode("iso-2022-jp")


ROOT = Path(__file__).resolve().parents[1]


def _render_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_example", ROOT / "deploy" / "render_example.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_examples_equal_what_renders_now() -> None:
    """deploy/docs/ never drifts: regenerate with `PYTHONPATH=. .venv/bin/python deploy/render_example.py`."""
    example = _render_example()
    texts = example.variant_texts()
    committed = sorted((ROOT / "deploy" / "docs" / "variants").glob("*.txt"))
    assert {path.stem for path in committed} == set(VARIANTS) == set(texts)
    for path in committed:
        assert path.read_text(encoding="utf-8") == texts[path.stem], f"{path.name} is stale"
    # (The .eml's Message-ID varies with the interpreter's hash seed; its two text parts do not.)
    parts = example._parts(example.explained_example())
    assert (ROOT / "deploy" / "docs" / "explained-example.txt").read_text(encoding="utf-8") == parts[
        "text/plain"
    ]
    assert (ROOT / "deploy" / "docs" / "explained-example.html").read_text(encoding="utf-8") == parts[
        "text/html"
    ]


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_later_recipients_of_a_kind_get_only_their_main_commands(lang: str) -> None:
    bounce = report("mailbox", "first@contoso.example")
    for variant, address in (("mailbox", "second@contoso.example"), ("group", "team@contoso.example")):
        bounce.recipients += report(variant, address).recipients
    block = rendered(bounce, lang)
    same = (
        "the same as for first@contoso.example above"
        if lang == "en"
        else "上記の first@contoso.example と同じ手順です"
    )
    text_lines = [line.strip() for line in command_lines(block.text)]
    assert text_lines == [line.strip() for line in html_command_lines(block.html)]
    for part_text in (flat_text(block.text), flat_html(block.html)):
        assert part_text.count(same) == 1
        assert part_text.index(same) < part_text.index(
            f"Set-Mailbox -Identity 'second@contoso.example' {CLEAR}"
        )
    # The second mailbox gets the plain fix only: never the allowed-list line, which restricts.
    second = [line for line in text_lines if "'second@contoso.example'" in line]
    assert second == [f"Set-Mailbox -Identity 'second@contoso.example' {CLEAR}"]
    # The group, a new kind, gets its full steps.
    assert any(
        line.startswith("Set-DynamicDistributionGroup -Identity 'team@contoso.example'")
        for line in text_lines
    )
    for line in text_lines:
        tokenize(line)
