"""The console's wording in English and Japanese, and which of the two a request gets.

The page follows the browser's ``Accept-Language`` (RFC 9110 section 12.5.4: the highest
quality value wins, ties keep the header's order); a ``lang`` parameter in the URL overrides it,
so a shared link shows the language it was shared in. Every key exists in both languages (a
test checks it).
"""

from __future__ import annotations

from typing import Final

LANGUAGES: Final = ("en", "ja")
DEFAULT: Final = "en"

#: key -> (English, Japanese). ``{name}`` placeholders are filled with str.format after escaping.
_TEXT: Final[dict[str, tuple[str, str]]] = {
    "title": ("bouncegw incident console", "bouncegw インシデントコンソール"),
    "skip": ("Skip to content", "本文へ移動"),
    "nav": ("Console sections", "コンソールの項目"),
    "problems": ("Problems", "問題"),
    "trends": ("Trends", "傾向"),
    "problems_intro": (
        "Recipients that refuse our mail because they accept only authenticated senders, one row per "
        "recipient and kind of refusal.",
        "認証済みの送信者からのメールだけを受け付けるために当方のメールを拒否している受信者です。"
        "受信者と拒否の種類ごとに1行です。",
    ),
    "filters": ("Filters", "絞り込み"),
    "since": ("Since", "開始"),
    "until": ("Until", "終了"),
    "time_hint": ("24h, 7d, 30d or a date such as 2026-01-31", "24h、7d、30d または 2026-01-31 のような日付"),
    "domain": ("Recipient domain", "受信者ドメイン"),
    "variant": ("Kind", "種類"),
    "sender": ("Our sender (address or domain)", "当方の送信者（アドレスまたはドメイン）"),
    "state": ("State", "状態"),
    "any": ("Any", "すべて"),
    "apply": ("Apply filters", "絞り込む"),
    "clear": ("Clear filters", "条件を解除"),
    "recipient": ("Recipient", "受信者"),
    "first_seen": ("First seen", "初回"),
    "last_seen": ("Last seen", "最終"),
    "bounces": ("Bounces", "バウンス数"),
    "senders": ("Senders affected", "影響を受けた送信者"),
    "weekly": ("Last 12 weeks", "直近12週"),
    "weekly_label": ("Bounces per week, oldest first: {counts}", "週ごとのバウンス数（古い順）: {counts}"),
    "active": ("Active", "継続中"),
    "quiet": ("Quiet", "収束"),
    "yes": ("yes", "はい"),
    "no": ("no", "いいえ"),
    "active_evidence": (
        "no message relayed to it since the last bounce",
        "最後のバウンス以降、この宛先へ中継したメールはありません",
    ),
    "quiet_evidence": (
        "{count} messages to this recipient since the last bounce, none bounced",
        "最後のバウンス以降この受信者へ {count} 通を中継し、バウンスは0件",
    ),
    "quiet_evidence_1": (
        "1 message to this recipient since the last bounce, none bounced",
        "最後のバウンス以降この受信者へ 1 通を中継し、バウンスは0件",
    ),
    "last_relayed": ("last relayed {when}", "最終中継 {when}"),
    "sorted_asc": ("sorted ascending", "昇順"),
    "sorted_desc": ("sorted descending", "降順"),
    "sort_by": ("Sort by {column}", "{column}で並べ替え"),
    "showing": ("{first}–{last} of {total} recipients", "{total} 件中 {first}–{last} 件"),
    "none_found": ("No incident matches these filters.", "条件に合うインシデントはありません。"),
    "previous": ("Previous page", "前のページ"),
    "next": ("Next page", "次のページ"),
    "pages": ("Pages", "ページ"),
    "export": ("Export this view", "この表示を書き出す"),
    "export_incidents": ("Export the incidents of this view", "この表示のインシデントを書き出す"),
    "open": ("Open the latest incident for {recipient}", "{recipient} の最新インシデントを開く"),
    "incident": ("Incident", "インシデント"),
    "fields": ("What was recorded", "記録された内容"),
    "block": ("The explanation the sender received", "送信者が受け取った説明"),
    "block_note": (
        "Rendered again from the stored fields, as bouncegw wrote it into the bounce for this recipient.",
        "保存された項目から、bouncegw がこの受信者について通知に書き込んだとおりに再生成しています。",
    ),
    "note": ("For the recipient's administrator", "受信者側の管理者へ"),
    "note_intro": (
        "A note to send to the administrator of {domain}: copy it, or download it as a message "
        "ready to forward.",
        "{domain} の管理者に送る文面です。コピーするか、"
        "そのまま転送できるメッセージとしてダウンロードしてください。",
    ),
    "note_en": ("English", "英語"),
    "note_ja": ("Japanese", "日本語"),
    "download_eml": ("Download .eml ({lang})", ".eml をダウンロード（{lang}）"),
    "download_txt": ("Download text ({lang})", "テキストをダウンロード（{lang}）"),
    "copy": ("Copy", "コピー"),
    "other_incidents": ("Incidents for this recipient", "この受信者のインシデント"),
    "recorded_at": ("Recorded", "記録日時"),
    "status": ("Status", "ステータス"),
    "back": ("Back to problems", "問題一覧へ戻る"),
    "trends_intro": (
        "Incidents over time by kind, and the domains that refuse most.",
        "種類別のインシデント推移と、拒否の多いドメインです。",
    ),
    "over_time": ("Incidents per {bucket} by kind", "種類別インシデント数（{bucket}ごと）"),
    "day": ("day", "日"),
    "week": ("week", "週"),
    "top_domains": ("Domains refusing most", "拒否の多いドメイン"),
    "count": ("Incidents", "件数"),
    "recipients": ("Recipients", "受信者数"),
    "chart_data": ("The chart's figures", "グラフの数値"),
    "period": ("Period", "期間"),
    "language": ("Language", "言語"),
    "other_language": ("日本語", "English"),
    "not_found": ("No incident with this id.", "この ID のインシデントはありません。"),
    "bad_request": ("This filter cannot be used: {detail}", "この条件は使えません: {detail}"),
    "unavailable": ("The database is unavailable: {detail}", "データベースを利用できません: {detail}"),
}

#: Field labels of the detail page, in IncidentRecord order.
_FIELDS: Final[dict[str, tuple[str, str]]] = {
    "id": ("Incident id", "インシデント ID"),
    "recorded_at": ("Recorded", "記録日時"),
    "failed_recipient": ("Refusing recipient", "拒否した受信者"),
    "recipient_domain": ("Recipient domain", "受信者ドメイン"),
    "original_recipient": ("Original recipient", "元の受信者"),
    "variant": ("Kind", "種類"),
    "category": ("Category", "分類"),
    "status": ("Status", "ステータス"),
    "reported_status": ("Status in the bounce", "通知上のステータス"),
    "diagnostic": ("Diagnostic", "診断メッセージ"),
    "sender": ("Our sender", "当方の送信者"),
    "original_subject": ("Original subject", "元の件名"),
    "original_date": ("Original date", "元の送信日時"),
    "original_message_id": ("Original Message-ID", "元の Message-ID"),
    "reporting_mta": ("Reporting MTA", "通知した MTA"),
    "remote_mta": ("Remote MTA", "相手の MTA"),
    "bounce_message_id": ("Bounce Message-ID", "通知の Message-ID"),
    "annotated": ("Explained in the bounce", "通知に説明を追加"),
    "relay_outcome": ("Relay outcome", "中継結果"),
    "source": ("Found by", "検出元"),
    "instance": ("Gateway instance", "ゲートウェイ"),
    "transaction_id": ("Transaction", "トランザクション"),
    "client_address": ("Upstream address", "上流のアドレス"),
}

#: Kinds of refusing recipient (the classifier's variants), short names.
_VARIANTS: Final[dict[str, tuple[str, str]]] = {
    "group": ("Group", "グループ"),
    "microsoft365_group": ("Microsoft 365 group", "Microsoft 365 グループ"),
    "mailbox": ("Mailbox", "メールボックス"),
    "mail_user": ("Mail user", "メールユーザー"),
    "public_folder": ("Public folder", "パブリックフォルダー"),
    "organization": ("Organisation", "組織"),
    "legacy": ("On-premises Exchange", "オンプレミス Exchange"),
    "allowed_senders": ("Allowed senders only", "許可された送信者のみ"),
}


def _index(lang: str) -> int:
    return 1 if lang == "ja" else 0


def text(key: str, lang: str) -> str:
    return _TEXT[key][_index(lang)]


def field_label(name: str, lang: str) -> str:
    return _FIELDS[name][_index(lang)]


def field_names() -> tuple[str, ...]:
    return tuple(_FIELDS)


def variant_label(variant: str | None, lang: str) -> str:
    """A variant's name in ``lang``; an unknown one as stored (the template escapes it)."""
    if variant is None:
        return "-"
    names = _VARIANTS.get(variant)
    return names[_index(lang)] if names else variant


def known_variants() -> tuple[str, ...]:
    return tuple(_VARIANTS)


def all_keys() -> dict[str, dict[str, tuple[str, str]]]:
    """Every table (for the completeness test)."""
    return {"text": dict(_TEXT), "fields": dict(_FIELDS), "variants": dict(_VARIANTS)}


def negotiate(accept_language: str | None, override: str | None = None) -> str:
    """``override`` when it names a language of the console, else the best of Accept-Language."""
    if override in LANGUAGES:
        return override
    best, best_q = DEFAULT, 0.0
    for item in (accept_language or "")[:1000].split(","):
        tag, _, params = item.strip().partition(";")
        base = tag.strip().lower().split("-", 1)[0]
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if base in LANGUAGES and q > best_q:
            best, best_q = base, q
    return best
