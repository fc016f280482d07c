/* One binlog row image decoded in C: the in-place path of cdc/source/row_decoder.py, value for value.
 *
 * compile(steps) -> plan: a table's columns, checked and read once (per table map, not per row).
 *   steps         per column: (name, kind, a, b), built by binlog_fixes._plan:
 *                 INT (size, signed), STR (length-prefix size, Python encoding name), DATE,
 *                 DATETIME2 (fsp), TIMESTAMP2 (fsp), DECIMAL (precision, scale)
 *   A step outside what MySQL writes is a ValueError naming the column.
 *
 * decode_row(data, pos, cols_bitmap, plan, none_sources, errors) -> (values, new_pos)
 *   data          the packet's bytes (MysqlPacket._data); the row image starts at pos
 *   cols_bitmap   the event's columns-present bitmap
 *   none_sources  the event's dict of why a value is None, filled as the library fills it
 *   errors        "strict" or "ignore", for decoding strings
 *
 * decode_rows(data, pos, size, cols_bitmap, cols_bitmap2 or None, plan, none_sources, errors)
 *     -> (rows, new_pos): every row of a rows event (its ``size`` bytes of rows from pos) in one
 *     call, each row the dict the library's _fetch_one_row builds (with its none_sources), the
 *     images decoded as decode_row does.
 *
 * Every value is what python-mysql-replication's decoder gives for the same bytes (zero and
 * invalid dates as None with the library's reason, where the library raises for a DATE whose day
 * the month does not have: None here too; an error names its column in its cdc_column attribute, DECIMAL from the same text, strings in an
 * encoding Python does not know as bytes); tests/integration/test_binlog_decoder.py compares
 * the three decoders on one binlog.  setup() is called once with decimal.Decimal and the
 * library's NONE_SOURCE strings.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <string.h>

enum { K_INT, K_STR, K_DATE, K_DATETIME2, K_TIMESTAMP2, K_DECIMAL };

static PyObject *Decimal;         /* decimal.Decimal */
static PyObject *NONE_COLS_BITMAP, *NONE_NULL, *NONE_DATETIME2, *NONE_DATE;
/* the keys of a row dict, as the library names them */
static PyObject *KEY_VALUES, *KEY_NONE, *KEY_BEFORE, *KEY_BEFORE_NONE, *KEY_AFTER, *KEY_AFTER_NONE;

typedef struct {
    PyObject *name;          /* the column */
    int kind, a, scale;      /* a: integer or length-prefix size, fraction digits, DECIMAL precision */
    int is_signed;
    PyObject *encoding_obj;  /* STR: keeps encoding alive */
    const char *encoding;
} Step;

typedef struct {
    Py_ssize_t n;
    Step steps[];
} Plan;

#define PLAN_NAME "cdc._rowdecode.plan"

typedef struct {
    const unsigned char *data;
    Py_ssize_t len, pos;
} Reader;

/* the bytes [pos, pos + size) or NULL with the error MysqlPacket.read raises */
static const unsigned char *take(Reader *r, Py_ssize_t size) {
    if (r->pos + size > r->len) {
        PyErr_Format(PyExc_AssertionError,
                     "Result length not requested length: expected=%zd, position %zd, data length %zd",
                     size, r->pos, r->len);
        return NULL;
    }
    const unsigned char *p = r->data + r->pos;
    r->pos += size;
    return p;
}

static unsigned long long le(const unsigned char *p, int size) {
    unsigned long long v = 0;
    for (int i = size - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static unsigned long long be(const unsigned char *p, int size) {
    unsigned long long v = 0;
    for (int i = 0; i < size; i++) v = (v << 8) | p[i];
    return v;
}

/* microseconds of a DATETIME2/TIMESTAMP2 with fsp digits (binlog_fixes._fraction); -1 on error */
static int fraction(Reader *r, int fsp, long *micro) {
    *micro = 0;
    if (!fsp) return 0;
    int size = (fsp + 1) >> 1;
    const unsigned char *p = take(r, size);
    if (!p) return -1;
    long long v = (long long)be(p, size);
    if (v & (1LL << (size * 8 - 1))) v -= 1LL << (size * 8);  /* signed, as the library reads it */
    if (fsp % 2) v /= 10;                                     /* int(micro / 10): toward zero */
    for (int i = fsp; i < 6; i++) v *= 10;
    *micro = (long)v;
    return 0;
}

static int days_in_month(int year, int month) {
    static const int days[] = {0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (month == 2 && ((year % 4 == 0 && year % 100 != 0) || year % 400 == 0)) return 29;
    return days[month];
}

/* days since 1970-01-01 to a civil date (H. Hinnant's algorithm), as utcfromtimestamp computes it */
static void civil(long long z, int *y, int *m, int *d) {
    z += 719468;
    long long era = (z >= 0 ? z : z - 146096) / 146097;
    long long doe = z - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long long mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

static const int DIG2BYTES[10] = {0, 1, 1, 2, 2, 3, 3, 4, 4, 4};

/* The library's __read_new_decimal: the same text, so the same Decimal. */
static PyObject *decimal_value(Reader *r, int precision, int scale) {
    int integral = precision - scale;
    int full_int = integral / 9, left_int = integral % 9;
    int full_frac = scale / 9, left_frac = scale % 9;
    int size = DIG2BYTES[left_int] + full_int * 4 + full_frac * 4 + DIG2BYTES[left_frac];
    const unsigned char *raw = take(r, size);
    if (!raw) return NULL;
    unsigned char buf[64];
    memcpy(buf, raw, size);
    int negative = !(buf[0] & 0x80);
    buf[0] ^= 0x80;
    if (negative)
        for (int i = 0; i < size; i++) buf[i] ^= 0xFF;
    char text[3 * sizeof(buf) + 8];  /* a byte prints at most 3 digits ("255"), plus sign and point */
    int n = 0, off = 0;
    if (negative) text[n++] = '-';
    if (left_int) {
        int b = DIG2BYTES[left_int];
        n += snprintf(text + n, sizeof(text) - n, "%llu", be(buf + off, b));
        off += b;
    }
    for (int i = 0; i < full_int; i++, off += 4) n += snprintf(text + n, sizeof(text) - n, "%09llu", be(buf + off, 4));
    text[n++] = '.';
    for (int i = 0; i < full_frac; i++, off += 4) n += snprintf(text + n, sizeof(text) - n, "%09llu", be(buf + off, 4));
    if (left_frac) {
        int b = DIG2BYTES[left_frac];
        n += snprintf(text + n, sizeof(text) - n, "%0*llu", left_frac, be(buf + off, b));
    }
    PyObject *s = PyUnicode_FromStringAndSize(text, n);
    if (!s) return NULL;
    PyObject *value = PyObject_CallOneArg(Decimal, s);
    Py_DECREF(s);
    return value;
}

static int set(PyObject *dict, PyObject *key, PyObject *value) {
    /* steals value */
    if (!value) return -1;
    int rc = PyDict_SetItem(dict, key, value);
    Py_DECREF(value);
    return rc;
}

/* A None value and its reason, in the event's dict of reasons and, where given, the row's own. */
static int set_none(PyObject *values, PyObject *none_sources, PyObject *row_none, PyObject *name, PyObject *reason) {
    if (PyDict_SetItem(none_sources, name, reason) || PyDict_SetItem(values, name, Py_None)) return -1;
    return row_none ? PyDict_SetItem(row_none, name, reason) : 0;
}

/* The pending error names the column being decoded, as binlog_fixes._annotate does: its attribute
 * cdc_column is the column's name, and a note says it (the reader's dead letter names the column). */
static void annotate(PyObject *name) {
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    if (exc && !PyObject_HasAttrString(exc, "cdc_column")) {
        if (PyObject_SetAttrString(exc, "cdc_column", name)) PyErr_Clear();
        PyObject *note = PyUnicode_FromFormat("while decoding column %R", name);
        if (note) {
            PyObject *done = PyObject_CallMethod(exc, "add_note", "O", note);
            Py_XDECREF(done);
            Py_DECREF(note);
        }
        PyErr_Clear();
    }
    PyErr_Restore(type, exc, tb);
}

/* One row image at r's position: a new dict of values, or NULL with the error set. The reason of
 * every None goes into none_sources (the event's, as the library keeps it) and into row_none if
 * given (what the library's _get_none_sources builds for the row right after the image). */
static PyObject *decode_image(Reader *r, const unsigned char *present, Py_ssize_t nbitmap, const Plan *plan,
                              PyObject *none_sources, const char *errors, PyObject *row_none) {
    Py_ssize_t ncols = plan->n, npresent = 0;
    for (Py_ssize_t i = 0; i < nbitmap; i++) npresent += __builtin_popcount(present[i]);
    const unsigned char *nulls = take(r, (npresent + 7) >> 3);
    if (!nulls) return NULL;
    PyObject *values = PyDict_New();
    if (!values) return NULL;
    Py_ssize_t null_index = 0, at_column = -1;
    for (Py_ssize_t i = 0; i < ncols; i++) {
        at_column = i;
        const Step *step = &plan->steps[i];
        PyObject *name = step->name;
        int a = step->a;
        if (!((i >> 3) < nbitmap && (present[i >> 3] >> (i & 7)) & 1)) {
            if (set_none(values, none_sources, row_none, name, NONE_COLS_BITMAP)) goto fail;
            continue;
        }
        Py_ssize_t at = null_index++;
        if ((nulls[at >> 3] >> (at & 7)) & 1) {
            if (set_none(values, none_sources, row_none, name, NONE_NULL)) goto fail;
            continue;
        }
        const unsigned char *p;
        PyObject *value;
        switch (step->kind) {
        case K_INT: {
            if (!(p = take(r, a))) goto fail;
            unsigned long long u = le(p, a);
            if (step->is_signed) {
                long long s = a == 8 ? (long long)u
                                     : (long long)(u ^ (1ULL << (a * 8 - 1))) - (long long)(1ULL << (a * 8 - 1));
                value = PyLong_FromLongLong(s);
            } else {
                value = PyLong_FromUnsignedLongLong(u);
            }
            break;
        }
        case K_STR: {
            if (!(p = take(r, a))) goto fail;
            Py_ssize_t n = (Py_ssize_t)le(p, a);
            if (!(p = take(r, n))) goto fail;
            value = PyUnicode_Decode((const char *)p, n, step->encoding, errors);
            if (!value && PyErr_ExceptionMatches(PyExc_LookupError)) {
                /* a charset Python does not know (e.g. swe7): the bytes, as the library gives them */
                PyErr_Clear();
                value = PyBytes_FromStringAndSize((const char *)p, n);
            }
            break;
        }
        case K_DECIMAL:
            value = decimal_value(r, a, step->scale);
            break;
        case K_DATETIME2: {
            if (!(p = take(r, 5))) goto fail;
            unsigned long long packed = be(p, 5);
            int ym = (int)((packed >> 22) & 0x1FFFF);
            int year = ym / 13, month = ym % 13, day = (int)((packed >> 17) & 0x1F);
            int hour = (int)((packed >> 12) & 0x1F), minute = (int)((packed >> 6) & 0x3F), second = (int)(packed & 0x3F);
            long micro;
            if (fraction(r, a, &micro)) goto fail;
            if (year < 1 || year > 9999 || month < 1 || month > 12 || day < 1 || day > days_in_month(year, month) ||
                hour > 23 || minute > 59 || second > 59) {
                /* zero or invalid: None, as datetime() refuses it in the library */
                if (set_none(values, none_sources, row_none, name, NONE_DATETIME2)) goto fail;
                continue;
            }
            value = PyDateTime_FromDateAndTime(year, month, day, hour, minute, second, micro > 0 ? (int)micro : 0);
            break;
        }
        case K_TIMESTAMP2: {
            if (!(p = take(r, 4))) goto fail;
            long long seconds = (long long)(int32_t)(uint32_t)be(p, 4);
            long micro;
            if (fraction(r, a, &micro)) goto fail;
            long long days = seconds >= 0 ? seconds / 86400 : -((-seconds + 86399) / 86400);
            long long rest = seconds - days * 86400;
            int year, month, day;
            civil(days, &year, &month, &day);
            value = PyDateTime_FromDateAndTime(year, month, day, (int)(rest / 3600), (int)(rest / 60 % 60),
                                               (int)(rest % 60), micro > 0 ? (int)micro : 0);
            break;
        }
        default: { /* K_DATE */
            if (!(p = take(r, 3))) goto fail;
            unsigned long packed = (unsigned long)le(p, 3);
            int year = (int)((packed >> 9) & 0x7FFF), month = (int)((packed >> 5) & 0xF), day = (int)(packed & 0x1F);
            if (!(year && month && day) || year > 9999 || month > 12 || day > days_in_month(year, month)) {
                /* zero, a zero part or a day the month does not have (sql_mode ALLOW_INVALID_DATES): None,
                 * as for DATETIME2 (docs/types.md), never an error that stops the stream */
                if (set_none(values, none_sources, row_none, name, NONE_DATE)) goto fail;
                continue;
            }
            value = PyDate_FromDate(year, month, day);
            break;
        }
        }
        if (set(values, name, value)) goto fail;
    }
    return values;
fail:
    Py_DECREF(values);
    if (at_column >= 0) annotate(plan->steps[at_column].name);
    return NULL;
}

static void plan_free(PyObject *capsule) {
    Plan *plan = PyCapsule_GetPointer(capsule, PLAN_NAME);
    if (!plan) return;
    for (Py_ssize_t i = 0; i < plan->n; i++) {
        Py_XDECREF(plan->steps[i].name);
        Py_XDECREF(plan->steps[i].encoding_obj);
    }
    PyMem_Free(plan);
}

static long item_long(PyObject *step, Py_ssize_t i) {
    PyObject *item = PyTuple_GET_ITEM(step, i);
    return item == Py_None ? 0 : PyLong_AsLong(item);
}

static PyObject *compile_plan(PyObject *self, PyObject *args) {
    PyObject *steps;
    if (!PyArg_ParseTuple(args, "O!", &PyTuple_Type, &steps)) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(steps);
    Plan *plan = PyMem_Calloc(1, sizeof(Plan) + n * sizeof(Step));
    if (!plan) return PyErr_NoMemory();
    PyObject *capsule = PyCapsule_New(plan, PLAN_NAME, plan_free);
    if (!capsule) {
        PyMem_Free(plan);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(steps, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 4) {
            PyErr_SetString(PyExc_TypeError, "a step is (name, kind, a, b)");
            goto fail;
        }
        Step *step = &plan->steps[i];
        step->name = Py_NewRef(PyTuple_GET_ITEM(item, 0));
        plan->n = i + 1;  /* the capsule's destructor releases what is set */
        long kind = item_long(item, 1), a = item_long(item, 2);
        PyObject *b = PyTuple_GET_ITEM(item, 3);
        if (PyErr_Occurred()) goto fail;
        int ok;
        switch (kind) {
        case K_INT:
            ok = a == 1 || a == 2 || a == 3 || a == 4 || a == 8;
            step->is_signed = PyObject_IsTrue(b) == 1;
            break;
        case K_STR:
            ok = a >= 1 && a <= 4 && PyUnicode_Check(b) && (step->encoding = PyUnicode_AsUTF8(b)) != NULL;
            if (ok) step->encoding_obj = Py_NewRef(b);
            break;
        case K_DATE:
            ok = 1;
            break;
        case K_DATETIME2:
        case K_TIMESTAMP2:
            ok = a >= 0 && a <= 6;
            break;
        case K_DECIMAL: {
            long scale = b == Py_None ? -1 : PyLong_AsLong(b);
            if (PyErr_Occurred()) goto fail;
            ok = a >= 1 && a <= 65 && scale >= 0 && scale <= 30 && scale <= a;  /* MySQL's limits */
            step->scale = (int)scale;
            break;
        }
        default:
            ok = 0;
        }
        if (PyErr_Occurred()) goto fail;
        if (!ok) {
            PyErr_Format(PyExc_ValueError, "column %R: no decoder for kind %ld with %ld, %R", step->name, kind, a, b);
            goto fail;
        }
        step->kind = (int)kind;
        step->a = (int)a;
    }
    return capsule;
fail:
    Py_DECREF(capsule);
    return NULL;
}

static const Plan *get_plan(PyObject *capsule) {
    return PyCapsule_GetPointer(capsule, PLAN_NAME);  /* NULL with a ValueError for anything else */
}

static PyObject *decode_row(PyObject *self, PyObject *args) {
    Py_buffer data, bitmap;
    Py_ssize_t pos;
    PyObject *capsule, *none_sources, *result = NULL;
    const char *errors;
    if (!PyArg_ParseTuple(args, "y*ny*OO!s", &data, &pos, &bitmap, &capsule, &PyDict_Type, &none_sources, &errors))
        return NULL;
    Reader r = {(const unsigned char *)data.buf, data.len, pos};
    const Plan *plan = get_plan(capsule);
    if (!plan) {
        /* the error is set */
    } else if (pos >= 0 && pos <= data.len) {
        PyObject *values = decode_image(&r, bitmap.buf, bitmap.len, plan, none_sources, errors, NULL);
        if (values) {
            result = Py_BuildValue("(Nn)", values, r.pos);
        }
    } else {
        PyErr_Format(PyExc_ValueError, "position %zd outside the data (%zd bytes)", pos, data.len);
    }
    PyBuffer_Release(&data);
    PyBuffer_Release(&bitmap);
    return result;
}

/* Every row of a rows event, as the library's RowsEvent._fetch_rows builds them: for a write or a
 * delete {"values", "none_sources"}, for an update (bitmap2 given) {"before_values",
 * "before_none_sources", "after_values", "after_none_sources"}; rows are read while the position
 * is before end (the event's last row byte). */
static PyObject *decode_rows(PyObject *self, PyObject *args) {
    Py_buffer data, bitmap, bitmap2 = {0};
    Py_ssize_t pos, size;
    PyObject *capsule, *none_sources, *maybe2, *rows = NULL, *result = NULL;
    const char *errors;
    if (!PyArg_ParseTuple(args, "y*nny*OOO!s", &data, &pos, &size, &bitmap, &maybe2, &capsule, &PyDict_Type,
                          &none_sources, &errors))
        return NULL;
    Py_ssize_t end = pos + size;
    int update = maybe2 != Py_None;
    const Plan *plan = get_plan(capsule);
    if (!plan) goto done;
    if (update && PyObject_GetBuffer(maybe2, &bitmap2, PyBUF_SIMPLE)) goto done;
    if (pos < 0 || size < 0 || end > data.len) {
        PyErr_Format(PyExc_ValueError, "rows [%zd, %zd) outside the data (%zd bytes)", pos, end, data.len);
        goto done;
    }
    Reader r = {(const unsigned char *)data.buf, data.len, pos};
    rows = PyList_New(0);
    if (!rows) goto done;
    while (r.pos < end) {
        PyObject *row = PyDict_New(), *none = NULL, *values = NULL;
        if (!row) goto done;
        for (int image = 0; image < 1 + update; image++) {
            const Py_buffer *b = image ? &bitmap2 : &bitmap;
            if (!(none = PyDict_New())) goto row_fail;
            if (!(values = decode_image(&r, b->buf, b->len, plan, none_sources, errors, none))) goto row_fail;
            PyObject *vk = update ? (image ? KEY_AFTER : KEY_BEFORE) : KEY_VALUES;
            PyObject *nk = update ? (image ? KEY_AFTER_NONE : KEY_BEFORE_NONE) : KEY_NONE;
            if (PyDict_SetItem(row, vk, values) || PyDict_SetItem(row, nk, none)) goto row_fail;
            Py_CLEAR(values);
            Py_CLEAR(none);
        }
        if (PyList_Append(rows, row)) goto row_fail;
        Py_DECREF(row);
        continue;
    row_fail:
        Py_XDECREF(values);
        Py_XDECREF(none);
        Py_DECREF(row);
        goto done;
    }
    result = Py_BuildValue("(On)", rows, r.pos);
done:
    Py_XDECREF(rows);
    PyBuffer_Release(&data);
    PyBuffer_Release(&bitmap);
    if (update && bitmap2.obj) PyBuffer_Release(&bitmap2);
    return result;
}


static PyObject *setup(PyObject *self, PyObject *args) {
    PyObject *decimal, *cols, *null, *dt2, *date;
    if (!PyArg_ParseTuple(args, "OUUUU", &decimal, &cols, &null, &dt2, &date)) return NULL;
    Py_XSETREF(Decimal, Py_NewRef(decimal));
    Py_XSETREF(NONE_COLS_BITMAP, Py_NewRef(cols));
    Py_XSETREF(NONE_NULL, Py_NewRef(null));
    Py_XSETREF(NONE_DATETIME2, Py_NewRef(dt2));
    Py_XSETREF(NONE_DATE, Py_NewRef(date));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"compile", compile_plan, METH_VARARGS, "a table's steps, checked once: the plan decode_row(s) take"},
    {"decode_row", decode_row, METH_VARARGS, "decode one row image in place: (values, new position)"},
    {"decode_rows", decode_rows, METH_VARARGS, "decode every row of a rows event in place: (rows, new position)"},
    {"setup", setup, METH_VARARGS, "setup(Decimal, cols_bitmap, null, datetime2, date): the values used for None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rowdecode", NULL, -1, methods};

PyMODINIT_FUNC PyInit__rowdecode(void) {
    PyDateTime_IMPORT;
    if (!PyDateTimeAPI) return NULL;
    if (!(KEY_VALUES = PyUnicode_InternFromString("values")) || !(KEY_NONE = PyUnicode_InternFromString("none_sources")) ||
        !(KEY_BEFORE = PyUnicode_InternFromString("before_values")) ||
        !(KEY_BEFORE_NONE = PyUnicode_InternFromString("before_none_sources")) ||
        !(KEY_AFTER = PyUnicode_InternFromString("after_values")) ||
        !(KEY_AFTER_NONE = PyUnicode_InternFromString("after_none_sources")))
        return NULL;
    return PyModule_Create(&module);
}
