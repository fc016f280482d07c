-- Demo legacy source: the PHP/MySQL community platform of a professional association (database `legacy`).
--
-- Stable names (mappings and tests rely on them):
--   membership_types      id, code, label, annual_fee, is_active
--   chapters              id, code, name*, region, country, is_active, created
--   members               id, email, first_name*, last_name*, address*, city*, country, phone, birth_date,
--                         member_type_id, chapter_id, status, is_active, newsletter_optin, join_date,
--                         last_login, created, modified, balance, points, deleted
--   events                id, chapter_id, event_type, title*, start_dt, end_dt, capacity, price, ce_credits,
--                         status, created
--   event_registrations   id, member_id, event_id, status, registered_at, attended, fee_paid
--   certifications        id, code, name, issuing_body, validity_months, required_credits
--   member_certifications id, member_id, certification_id, cert_number, issued_on, expires_on, status
--   ce_credits            id, member_id, event_id, activity*, credits, earned_on, verified
--   orders                id, member_id, order_no, total, currency, status, created, updated
--   order_items           id, order_id, item_type, ref_id, sku, description*, qty, unit_price
--   payments              id, order_id, amount, method, gateway_ref, status, paid_at, raw_response
--   (* = CHARACTER SET latin1)
--
-- Codes:
--   members.status                 CHAR(1)  A active, P pending, L lapsed, S suspended, X expelled
--   events.status                  CHAR(1)  D draft, O open, C closed, X cancelled
--   event_registrations.status     TINYINT  0 pending, 1 confirmed, 2 waitlisted, 3 cancelled
--   member_certifications.status   CHAR(1)  A active, E expired, R revoked
--   orders.status                  CHAR(1)  N new, P paid, C cancelled, R refunded
--   payments.status                CHAR(1)  P pending, S settled, F failed, R refunded
--
-- Legacy quirks, on purpose: no foreign keys; TINYINT(1) flags; one-letter and numeric status codes;
-- zero dates ('0000-00-00', '0000-00-00 00:00:00' mean "unknown"/"never"); latin1 name and address
-- columns in utf8mb4 tables; members.birth_date is a VARCHAR 'dd/mm/yyyy' (or ''); ENUMs; UNSIGNED ints;
-- members.deleted is a soft-delete flag (rows are also hard-deleted sometimes); payments.raw_response is
-- gateway JSON kept as TEXT. Sessions writing here use sql_mode=''.
--
-- Loaded by cdc.demo.seed.create_schema: whole-line '--' comments only, each statement ends with a
-- semicolon at the end of a line.

DROP TABLE IF EXISTS payments, order_items, orders, ce_credits, member_certifications, certifications,
    event_registrations, events, members, chapters, membership_types;

CREATE TABLE membership_types (
    id TINYINT UNSIGNED NOT NULL AUTO_INCREMENT,
    code VARCHAR(8) NOT NULL DEFAULT '',
    label VARCHAR(64) NOT NULL DEFAULT '',
    annual_fee DECIMAL(8,2) NOT NULL DEFAULT 0.00,
    is_active TINYINT(1) NOT NULL DEFAULT 1,
    PRIMARY KEY (id),
    KEY idx_code (code)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE chapters (
    id SMALLINT UNSIGNED NOT NULL AUTO_INCREMENT,
    code VARCHAR(8) NOT NULL DEFAULT '',
    name VARCHAR(100) CHARACTER SET latin1 NOT NULL DEFAULT '',
    region VARCHAR(32) NOT NULL DEFAULT '',
    country CHAR(2) NOT NULL DEFAULT '',
    is_active TINYINT(1) NOT NULL DEFAULT 1,
    created DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
    PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE members (
    id INT UNSIGNED NOT NULL AUTO_INCREMENT,
    email VARCHAR(190) NOT NULL DEFAULT '',
    first_name VARCHAR(64) CHARACTER SET latin1 NOT NULL DEFAULT '',
    last_name VARCHAR(64) CHARACTER SET latin1 NOT NULL DEFAULT '',
    address VARCHAR(255) CHARACTER SET latin1 DEFAULT NULL,
    city VARCHAR(64) CHARACTER SET latin1 DEFAULT NULL,
    country CHAR(2) NOT NULL DEFAULT '',
    phone VARCHAR(32) DEFAULT NULL,
    birth_date VARCHAR(10) DEFAULT NULL,
    member_type_id TINYINT UNSIGNED NOT NULL DEFAULT 1,
    chapter_id SMALLINT UNSIGNED NOT NULL DEFAULT 0,
    status CHAR(1) NOT NULL DEFAULT 'P',
    is_active TINYINT(1) NOT NULL DEFAULT 1,
    newsletter_optin TINYINT(1) NOT NULL DEFAULT 0,
    join_date DATE NOT NULL DEFAULT '0000-00-00',
    last_login DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
    created TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    modified TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    balance DECIMAL(10,2) NOT NULL DEFAULT 0.00,
    points INT UNSIGNED NOT NULL DEFAULT 0,
    deleted TINYINT(1) NOT NULL DEFAULT 0,
    PRIMARY KEY (id),
    KEY idx_email (email),
    KEY idx_chapter (chapter_id),
    KEY idx_status (status, deleted)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE events (
    id INT UNSIGNED NOT NULL AUTO_INCREMENT,
    chapter_id SMALLINT UNSIGNED NOT NULL DEFAULT 0,
    event_type ENUM('conference','webinar','workshop','meetup') NOT NULL DEFAULT 'webinar',
    title VARCHAR(200) CHARACTER SET latin1 NOT NULL DEFAULT '',
    start_dt DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
    end_dt DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
    capacity SMALLINT UNSIGNED NOT NULL DEFAULT 0,
    price DECIMAL(8,2) NOT NULL DEFAULT 0.00,
    ce_credits DECIMAL(5,2) NOT NULL DEFAULT 0.00,
    status CHAR(1) NOT NULL DEFAULT 'D',
    created TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    KEY idx_start (start_dt)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE event_registrations (
    id INT UNSIGNED NOT NULL AUTO_INCREMENT,
    member_id INT UNSIGNED NOT NULL DEFAULT 0,
    event_id INT UNSIGNED NOT NULL DEFAULT 0,
    status TINYINT UNSIGNED NOT NULL DEFAULT 0,
    registered_at DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
    attended TINYINT(1) NOT NULL DEFAULT 0,
    fee_paid DECIMAL(8,2) NOT NULL DEFAULT 0.00,
    PRIMARY KEY (id),
    KEY idx_member (member_id),
    KEY idx_event (event_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE certifications (
    id SMALLINT UNSIGNED NOT NULL AUTO_INCREMENT,
    code VARCHAR(16) NOT NULL DEFAULT '',
    name VARCHAR(128) NOT NULL DEFAULT '',
    issuing_body VARCHAR(128) NOT NULL DEFAULT '',
    validity_months TINYINT UNSIGNED NOT NULL DEFAULT 0,
    required_credits DECIMAL(5,2) NOT NULL DEFAULT 0.00,
    PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE member_certifications (
    id INT UNSIGNED NOT NULL AUTO_INCREMENT,
    member_id INT UNSIGNED NOT NULL DEFAULT 0,
    certification_id SMALLINT UNSIGNED NOT NULL DEFAULT 0,
    cert_number VARCHAR(32) NOT NULL DEFAULT '',
    issued_on DATE NOT NULL DEFAULT '0000-00-00',
    expires_on DATE NOT NULL DEFAULT '0000-00-00',
    status CHAR(1) NOT NULL DEFAULT 'A',
    PRIMARY KEY (id),
    KEY idx_member (member_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE ce_credits (
    id INT UNSIGNED NOT NULL AUTO_INCREMENT,
    member_id INT UNSIGNED NOT NULL DEFAULT 0,
    event_id INT UNSIGNED DEFAULT NULL,
    activity VARCHAR(255) CHARACTER SET latin1 NOT NULL DEFAULT '',
    credits DECIMAL(5,2) NOT NULL DEFAULT 0.00,
    earned_on DATE NOT NULL DEFAULT '0000-00-00',
    verified TINYINT(1) NOT NULL DEFAULT 0,
    PRIMARY KEY (id),
    KEY idx_member (member_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE orders (
    id INT UNSIGNED NOT NULL AUTO_INCREMENT,
    member_id INT UNSIGNED NOT NULL DEFAULT 0,
    order_no VARCHAR(20) NOT NULL DEFAULT '',
    total DECIMAL(12,2) NOT NULL DEFAULT 0.00,
    currency CHAR(3) NOT NULL DEFAULT 'USD',
    status CHAR(1) NOT NULL DEFAULT 'N',
    created DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
    updated TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    KEY idx_member (member_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE order_items (
    id INT UNSIGNED NOT NULL AUTO_INCREMENT,
    order_id INT UNSIGNED NOT NULL DEFAULT 0,
    item_type ENUM('membership','event','certification','product','donation') NOT NULL DEFAULT 'product',
    ref_id INT UNSIGNED NOT NULL DEFAULT 0,
    sku VARCHAR(32) NOT NULL DEFAULT '',
    description VARCHAR(255) CHARACTER SET latin1 NOT NULL DEFAULT '',
    qty SMALLINT UNSIGNED NOT NULL DEFAULT 1,
    unit_price DECIMAL(10,2) NOT NULL DEFAULT 0.00,
    PRIMARY KEY (id),
    KEY idx_order (order_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE payments (
    id INT UNSIGNED NOT NULL AUTO_INCREMENT,
    order_id INT UNSIGNED NOT NULL DEFAULT 0,
    amount DECIMAL(12,2) NOT NULL DEFAULT 0.00,
    method ENUM('card','check','transfer','invoice') NOT NULL DEFAULT 'card',
    gateway_ref VARCHAR(64) DEFAULT NULL,
    status CHAR(1) NOT NULL DEFAULT 'P',
    paid_at DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
    raw_response TEXT,
    PRIMARY KEY (id),
    KEY idx_order (order_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
