<?php
// A stand-in for the classic nginx auth_http PHP script mailgate replaces
// (issue #19), for the side-by-side benchmark in
// integration/nginx_bench_test.go only. It does what the issue says the
// old script did, in the same order: allow file, country lookup, default
// countries and exceptions, an IMAP login to check the password, one
// syslog line, the auth_http answer. Differences from a production
// script: the country comes from a small CSV range table (there is no
// IP2Location PHP library here), read on every request as the library's
// file mode reads its BIN; IPv4 only; no guard, no audit.
//
// Settings come from the environment: AUTH_USERFILE, AUTH_GEOCSV,
// AUTH_ALLOW (comma-separated country codes), AUTH_IMAP (host:port of the
// IMAP server that checks passwords), AUTH_SERVER_IMAP, AUTH_SERVER_POP3,
// AUTH_SERVER_SMTP (host:port nginx is sent to).

function answer_fail($msg, $proto) {
    header("Auth-Status: " . $msg);
    if ($proto === "smtp") {
        header("Auth-Error-Code: 535 5.7.8");
    }
    header("Auth-Wait: 3");
    exit;
}

function country_of($ip) {
    $n = ip2long($ip);
    if ($n === false) {
        return array("-", "-");
    }
    $f = fopen(getenv("AUTH_GEOCSV"), "r");
    while (($row = fgetcsv($f)) !== false) {
        if (count($row) >= 4 && $n >= ip2long($row[0]) && $n <= ip2long($row[1])) {
            fclose($f);
            return array($row[2], $row[3]);
        }
    }
    fclose($f);
    return array("-", "-");
}

function imap_quote($s) {
    return '"' . str_replace(array("\\", '"'), array("\\\\", "\\\""), $s) . '"';
}

function imap_check($user, $pass) {
    list($host, $port) = explode(":", getenv("AUTH_IMAP"));
    $s = @fsockopen($host, (int)$port, $errno, $errstr, 5);
    if ($s === false) {
        return false;
    }
    stream_set_timeout($s, 20);
    fgets($s, 8192); // greeting
    fwrite($s, "a1 LOGIN " . imap_quote($user) . " " . imap_quote($pass) . "\r\n");
    $ok = false;
    while (($line = fgets($s, 8192)) !== false) {
        if (strncmp($line, "a1 ", 3) === 0) {
            $ok = strncmp($line, "a1 OK", 5) === 0;
            break;
        }
    }
    if ($ok) {
        fwrite($s, "a2 LOGOUT\r\n");
    }
    fclose($s);
    return $ok;
}

$method = $_SERVER["HTTP_AUTH_METHOD"] ?? "";
$user = rawurldecode($_SERVER["HTTP_AUTH_USER"] ?? "");
$pass = rawurldecode($_SERVER["HTTP_AUTH_PASS"] ?? "");
$proto = $_SERVER["HTTP_AUTH_PROTOCOL"] ?? "";
$ip = $_SERVER["HTTP_CLIENT_IP"] ?? "";

openlog("NGINXMAILAUTH", LOG_PID, LOG_LOCAL0);
if ($method !== "plain" && $method !== "login") {
    answer_fail("Invalid login or password", $proto);
}

list($cc, $country) = country_of($ip);
$allowed = in_array($cc, explode(",", getenv("AUTH_ALLOW")), true);
foreach (file(getenv("AUTH_USERFILE"), FILE_IGNORE_NEW_LINES) as $line) {
    $f = explode("|", str_replace(array(" ", "\t", "\r", "\0"), "", $line));
    if (count($f) >= 2 && $f[0] === $user && ($f[1] === $cc || $f[1] === $ip)) {
        $allowed = true;
    }
}
if (!$allowed) {
    syslog(LOG_INFO, "$user : COUNTRYFAILED|$proto $ip|$cc|$country");
    answer_fail("Invalid login or password", $proto);
}
if (!imap_check($user, $pass)) {
    syslog(LOG_INFO, "$user : AUTHFAILED|$proto $ip|$cc|$country");
    answer_fail("Invalid login or password", $proto);
}
syslog(LOG_INFO, "$user : AUTHPASS|$proto $ip|$cc|$country");
list($host, $port) = explode(":", getenv("AUTH_SERVER_" . strtoupper($proto)));
header("Auth-Status: OK");
header("Auth-Server: " . $host);
header("Auth-Port: " . $port);
