import pytest

from sgmft.text.cleaning import (
    TextConfig,
    clean_text,
    normalize_whitespace,
    preprocess_text,
    remove_emoticons,
    remove_forward_chains,
    remove_mentions,
    remove_punctuation,
    remove_urls,
    segment,
    strip_topics,
    to_halfwidth,
)
from sgmft.text.stopwords import is_stopword, load_stopwords


def test_halfwidth_maps_fullwidth_ascii_and_ideographic_space():
    assert to_halfwidth("ＡＢＣ１２３＠＃：　ok") == "ABC123@#: ok"
    assert to_halfwidth("中文不变") == "中文不变"


@pytest.mark.parametrize("text, expected", [
    ("看这个 http://t.cn/A6abc12 好看", "看这个   好看"),
    ("链接https://weibo.com/123?x=1&y=2结束", "链接 结束"),
    ("www.example.com/page 你好", "  你好"),
    ("短链 t.cn/RxYz9 完", "短链   完"),
])
def test_remove_urls(text, expected):
    assert remove_urls(text) == expected


def test_forward_chain_markers_removed_words_kept():
    text = "我也想去//@小王同学:好羡慕//@Lily_2019: 那家店不错"
    assert remove_forward_chains(text) == "我也想去 好羡慕  那家店不错"


def test_forward_chain_dropped_when_asked():
    assert remove_forward_chains("原创内容//@张三:转发评论", keep_forwarded=False) == "原创内容"
    assert remove_forward_chains("没有转发", keep_forwarded=False) == "没有转发"


@pytest.mark.parametrize("text, expected", [
    ("@小王同学 一起去吃饭", "  一起去吃饭"),
    ("回复@Lily_2019:谢谢", " 谢谢"),
    ("和@张-三 @李四 逛街", "和    逛街"),
    ("email me: a@b.com", "email me: a@b.com"),          # an address is no mention
])
def test_remove_mentions(text, expected):
    assert remove_mentions(text) == expected


@pytest.mark.parametrize("text, words", [
    ("@张三今天在公司加班到很晚", ["今天", "公司", "加班", "晚"]),   # glued: the name is the first word
    ("@张三今天在公司加班到很晚。", ["今天", "公司", "加班", "晚"]),
    ("@中国移动客服 你好", ["你好"]),                             # delimited: the whole run is the name
    ("@中国移动客服：你好", ["你好"]),
    ("@Lily_2019好久不见", ["好久不见"]),
])
def test_mentions_end_by_weibo_rules_and_keep_the_words_after(text, words):
    assert preprocess_text(text) == words


def test_nickname_is_at_most_30_weighted_characters():
    from sgmft.text.cleaning import nickname_length

    assert nickname_length("a" * 40, delimited=True) == 30
    assert nickname_length("张" * 20, delimited=True) == 15      # a CJK character weighs two


@pytest.mark.parametrize("text, expected", [
    ("see http://t.co/abc\\nNext words", "see Next words"),     # literal \n ends the URL
    ("(see http://x.com/a).", "see"),
    ("RT @AmitSwami77: so sad http://t.co/N8…", "RT so sad"),
    ("链接https://weibo.com/123?x=1&y=2结束", "链接 结束"),
])
def test_urls_end_where_a_url_must(text, expected):
    assert clean_text(text) == expected


@pytest.mark.parametrize("text, words", [
    ("Une tempête à Paris, café crème! 在巴黎下雨了",
     ["Une", "tempête", "à", "Paris", "café", "crème", "巴黎", "下雨"]),
    ("iPhone手机真好用😀 #周末# @小王 ", ["iPhone", "手机", "真好", "周末"]),
    ("Weekend gym session 💪 健身房练腿 //@Coach_Li: nice form", ["Weekend", "gym", "session", "健身房",
                                                              "练腿", "nice", "form"]),
    ("São Paulo Ñandú naïve coöperate", ["São", "Paulo", "Ñandú", "naïve", "coöperate"]),
])
def test_mixed_language_posts_keep_latin_words_whole(text, words):
    assert preprocess_text(text) == words


def test_topics_keep_words_or_drop():
    assert strip_topics("#周末去哪儿#好开心") == " 周末去哪儿 好开心"
    assert strip_topics("#周末去哪儿#好开心", keep_words=False) == " 好开心"
    assert strip_topics("only one # sign") == "only one # sign"


def test_emoticon_codes_removed_but_not_long_brackets():
    assert remove_emoticons("好吃[哈哈][doge]！") == "好吃  ！"
    assert remove_emoticons("[这是一个很长很长的方括号内容不是表情]") == \
        "[这是一个很长很长的方括号内容不是表情]"


def test_punctuation_chinese_ascii_and_emoji():
    assert remove_punctuation("你好，世界！(ok)…😂👍") == "你好 世界  ok    "


def test_whitespace_and_control_characters():
    assert normalize_whitespace("  a\t\nb\u200b c\x00 ") == "a b c"


def test_clean_text_full_weibo_post():
    post = ("#周末#和@小王同学 去吃火锅[馋嘴]，太好吃了！！！http://t.cn/A6xyz "
            "//@Lily_2019:下次带我！")
    assert clean_text(post) == "周末 和 去吃火锅 太好吃了 下次带我"


def test_clean_text_mixed_english_and_fullwidth():
    assert clean_text("Ｗｏｒｋｉｎｇ late at the office，加班ing…") == "Working late at the office 加班ing"


@pytest.mark.parametrize("text", ["", "   \n\t", "[哈哈][泪]", "http://t.cn/abc", "😂😂!!!", "@someone"])
def test_clean_text_to_empty(text):
    assert clean_text(text) == ""
    assert preprocess_text(text) == []


def test_segment_uses_jieba():
    assert segment("我今天在公司加班") == ["我", "今天", "在", "公司", "加班"]


def test_preprocess_removes_chinese_and_english_stopwords():
    assert preprocess_text("我今天在公司加班, and the boss was there") == \
        ["今天", "公司", "加班", "boss"]


def test_preprocess_switches():
    raw = "我今天在公司加班"
    assert preprocess_text(raw, TextConfig(remove_stopwords=False)) == ["我", "今天", "在", "公司", "加班"]
    assert preprocess_text(raw, TextConfig(segment=False, remove_stopwords=False)) == [raw]


def test_stopword_lists_ship_with_package():
    zh, en = load_stopwords("zh"), load_stopwords("en")
    assert len(zh) > 500 and len(en) > 500
    assert {"的", "了", "我"} <= zh and {"the", "and", "of"} <= en
    assert not any(w in zh for w in ("家", "公司", "学校", "电影", "健身"))
    assert is_stopword("The") and not is_stopword("gym")
