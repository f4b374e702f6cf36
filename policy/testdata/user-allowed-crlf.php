<?php
## user-allowed.php: exceptions to the default countries, read by the
## mail auth script. One entry per line: user|CC or user|IP.
## Keep the entries inside the comment block below.
/*
alice@example.org|RU
bob@example.org|81.2.69.142
Carol@example.org|GB
*/ 
?>
