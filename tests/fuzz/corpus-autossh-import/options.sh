export AUTOSSH_GATETIME=7
AUTOSSH_MAXLIFETIME=60 exec autossh -M 0 -p 2222 -l u -i ~/k -J a@b:22,c -F /etc/ssh_cfg -oConnectTimeout=7 \
  -L [::1]:7001:[::1]:22 -L /tmp/a.sock:/run/b.sock -qv ssh://x@[::1]:23 tail -f /dev/null
autossh -L 5000:a:1 h.example.org
autossh -L 5000:a:1 h.example.org
