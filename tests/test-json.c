/* SPDX-License-Identifier: MIT */
#include "json.h"
#include "json_write.h"
#include "test.h"
#include "util.h"

static bool parses(const char *s)
{
        struct json *j = NULL;
        int r = json_parse(s, strlen(s), &j);

        json_free(j);
        return r >= 0;
}

static void test_valid(void)
{
        struct json *j = NULL;
        const char *s = "{\"cmd\":\"status\",\"tunnels\":[\"a\",\"b\"],\"all\":false,\"n\":-1.5e2,\"x\":null}";

        test_assert(json_parse(s, strlen(s), &j) == 0);
        test_assert_streq(json_get_string(j, "cmd"), "status");
        test_assert(json_get(j, "tunnels")->n == 2);
        test_assert(!json_get_bool(j, "all", true));
        test_assert(json_get_number(j, "n", 0) == -150);
        test_assert(json_get(j, "x")->type == JSON_NULL);
        json_free(j);
        test_assert(parses("\"\\u00e9\\ud83d\\ude00\""));
        test_assert(parses("\"caf\xc3\xa9\""));
}

static void test_invalid(void)
{
        static const char *bad[] = {
                "", "{", "{\"a\":}", "{\"a\":1,}", "[1,]", "01", "1.", "-", "\"\\x\"", "\"a", "tru",
                "{\"a\":1} x", "\"\\u0000\"", "\"\\ud800\"", "\"\\udc00\"",
                "\"\xff\"", "\"\xc3\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"",         /* not UTF-8 */
                "{\"cmd\":\"status\",\"cmd\":\"stop\"}",                          /* duplicate key */
                "[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]",                       /* too deep */
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                if (parses(bad[i]))
                        printf("#   accepted: %s\n", bad[i]);
                test_assert(!parses(bad[i]));
        }
}

static void test_writer_utf8(void)
{
        struct buf b = {0};
        _cleanup_free_ char *s = NULL;

        buf_json_string(&b, "ok \xc3\xa9 bad \xff\xfe cut \xe2\x82");
        test_assert(buf_steal(&b, &s) == 0);
        test_assert_streq(s, "\"ok \xc3\xa9 bad \\ufffd\\ufffd cut \\ufffd\\ufffd\"");
}

/* The writer keeps the commas: nested objects and arrays, keys, every value kind; and a
 * parsed value written back parses to the same text again. */
static void test_writer(void)
{
        struct buf b = {0};
        struct json_writer w = json_writer_init(&b);
        char *text = NULL, *again = NULL;
        char *v[] = { (char *)"a", (char *)"b\"c", NULL };
        struct json *j = NULL;

        json_begin_object(&w);
        json_field_string(&w, "name", "db");
        json_field_bool(&w, "up", true);
        json_write_key(&w, "pid");
        json_write_null(&w);
        json_field_int(&w, "n", -3);
        json_field_seconds(&w, "since", 1.5);
        json_field_strv(&w, "list", v);
        json_field_strv(&w, "empty", NULL);
        json_write_key(&w, "nested");
        json_begin_array(&w);
        json_begin_object(&w);
        json_end_object(&w);
        json_write_uint(&w, 7);
        json_end_array(&w);
        json_end_object(&w);
        test_assert(buf_steal(&b, &text) == 0);
        test_assert_streq(text, "{\"name\":\"db\",\"up\":true,\"pid\":null,\"n\":-3,\"since\":1.500,"
                                "\"list\":[\"a\",\"b\\\"c\"],\"empty\":[],\"nested\":[{},7]}");
        test_assert(json_parse(text, strlen(text), &j) == 0);
        w = json_writer_init(&b);
        json_write_value(&w, j);
        test_assert(buf_steal(&b, &again) == 0);
        test_assert_streq(again, "{\"name\":\"db\",\"up\":true,\"pid\":null,\"n\":-3,\"since\":1.5,"
                                 "\"list\":[\"a\",\"b\\\"c\"],\"empty\":[],\"nested\":[{},7]}");
        json_free(j);
        free(text);
        free(again);
}

TEST_MAIN(TEST(test_writer), TEST(test_valid), TEST(test_invalid), TEST(test_writer_utf8))
